//! The driver: runs a [`Target`] on generated and mutated inputs for a
//! bounded time (or number of executions), keeps the inputs that showed
//! something new (a crude stand-in for coverage: each target reports
//! "features" such as which error a config produced or which rule denied a
//! request), and catches panics. A panic is a finding: its input is
//! minimized, saved to a file, and printed with the panic's message and the
//! first frame in medic's own code.
//!
//! Deterministic for a given seed and execution count: the same
//! `MEDIC_FUZZ_SEED` and `MEDIC_FUZZ_EXECS` give the same inputs. A run
//! bounded by time reports how many executions it made, so it can be
//! repeated exactly by count.

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::choices::{Rng, hash};

/// One fuzz target.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Its name (file names, reports, `MEDIC_FUZZ_ONLY`).
    pub name: &'static str,
    /// Runs one input. Panics on a finding; reports features as it goes.
    pub run: fn(&[u8], &mut Features),
    /// What an input means, for a human reading a finding (the TOML text it
    /// makes, the operations it decodes to).
    pub describe: fn(&[u8]) -> String,
    /// Inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens worth splicing into inputs (TOML syntax, key names, values).
    pub dictionary: &'static [&'static str],
    /// The longest input generated.
    pub max_len: usize,
}

/// What one execution showed: hashes of behaviour (an error's field, a
/// denial's reason), compared across executions to keep inputs that reach
/// something new.
#[derive(Debug, Default)]
pub struct Features(Vec<u64>);

impl Features {
    /// Records a feature.
    pub fn add(&mut self, feature: u64) {
        self.0.push(feature);
    }

    /// Records a feature named by text.
    pub fn add_str(&mut self, feature: &str) {
        let h = hash(feature.as_bytes());
        if NAMES_ON.load(Ordering::Relaxed) {
            NAMES.with(|n| {
                let mut n = n.borrow_mut();
                let e = n.entry(h).or_insert_with(|| (feature.to_owned(), 0));
                e.1 += 1;
            });
        }
        self.add(h);
    }

    /// Records a feature named by several parts.
    pub fn add_parts(&mut self, parts: &[&str]) {
        self.add_str(&parts.join("\u{1f}"));
    }

    /// The features recorded.
    pub fn as_slice(&self) -> &[u64] {
        &self.0
    }
}

/// How long a run may go on: whichever limit comes first.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Wall time.
    pub time: Option<Duration>,
    /// Executions.
    pub execs: Option<u64>,
}

/// A caught panic.
#[derive(Clone, Debug)]
pub struct Panic {
    /// The panic's message.
    pub message: String,
    /// Where it was raised (`file:line:col`), often inside the standard
    /// library (an overflow in `Duration + Duration`).
    pub location: String,
    /// The first frame in medic's own code (not this crate's), if the
    /// backtrace was taken and has one: where the fix goes.
    pub site: Option<String>,
    /// The frames in medic's code, innermost first.
    pub frames: Vec<String>,
}

impl Panic {
    /// What tells two findings apart: the medic frame, else the location.
    pub fn key(&self) -> String {
        self.site.clone().unwrap_or_else(|| self.location.clone())
    }
}

/// A panic found by a run.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The panic (of the minimized input).
    pub panic: Panic,
    /// The input as found.
    pub input: Vec<u8>,
    /// The smallest input found that panics at the same place.
    pub minimized: Vec<u8>,
    /// Where the minimized input was saved.
    pub file: Option<PathBuf>,
    /// The target's description of the minimized input.
    pub description: String,
    /// The place it was first found at ([`Panic::key`] before minimizing).
    pub key: String,
    /// How many executions panicked at that place.
    pub hits: u64,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// The seed used.
    pub seed: u64,
    /// Executions made (minimization included).
    pub execs: u64,
    /// Wall time spent.
    pub elapsed: Duration,
    /// Inputs kept for showing something new.
    pub corpus: usize,
    /// Distinct features seen.
    pub features: usize,
    /// Panics, one per place.
    pub findings: Vec<Finding>,
}

impl Report {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let rate = if secs > 0.0 {
            self.execs as f64 / secs
        } else {
            0.0
        };
        format!(
            "medic-fuzz: {}: {} executions in {:.1} s ({:.0}/s), seed {}, corpus {}, features {}, findings {}",
            self.target,
            self.execs,
            secs,
            rate,
            self.seed,
            self.corpus,
            self.features,
            self.findings.len()
        )
    }

    /// Every finding, in full.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for (i, f) in self.findings.iter().enumerate() {
            let _ = writeln!(out, "{}", finding_text(self.target, i + 1, f));
        }
        out
    }
}

fn finding_text(target: &str, n: usize, f: &Finding) -> String {
    let mut out = String::new();
    let hits = if f.hits > 0 {
        format!(" ({} hits)", f.hits)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "=== {target}: finding {n}{hits}: panicked: {}",
        f.panic.message
    );
    let _ = writeln!(out, "location: {}", f.panic.location);
    if let Some(site) = &f.panic.site {
        let _ = writeln!(out, "medic frame: {site}");
    }
    for frame in f.panic.frames.iter().skip(1).take(6) {
        let _ = writeln!(out, "  called from {frame}");
    }
    if let Some(file) = &f.file {
        let _ = writeln!(out, "saved: {}", file.display());
    }
    let _ = writeln!(
        out,
        "input ({} bytes, minimized from {}): b\"{}\"",
        f.minimized.len(),
        f.input.len(),
        f.minimized.escape_ascii()
    );
    let _ = writeln!(out, "meaning:\n{}", f.description);
    out
}

/// Whether features are counted by name (`MEDIC_FUZZ_FEATURES=1`: a run
/// prints the most and least frequent, to see what a target reaches).
static NAMES_ON: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Named features and how often each was seen, when counted.
    static NAMES: RefCell<HashMap<u64, (String, u64)>> = RefCell::new(HashMap::new());
}

/// The named features seen on this thread, most frequent first.
fn named_features() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = NAMES.with(|n| n.borrow().values().cloned().collect());
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

// === Catching panics ===

thread_local! {
    /// Whether panics on this thread are the fuzzer's to catch (quietly).
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Whether to take a backtrace of the next caught panic.
    static BACKTRACE: Cell<bool> = const { Cell::new(true) };
    /// The last panic caught on this thread.
    static LAST: RefCell<Option<Panic>> = const { RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                return default(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_owned());
            let location = info.location().map_or_else(
                || "(unknown)".to_owned(),
                |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
            );
            let frames = if BACKTRACE.with(Cell::get) {
                medic_frames(&Backtrace::force_capture().to_string())
            } else {
                Vec::new()
            };
            let site = frames.first().cloned();
            LAST.with(|l| {
                *l.borrow_mut() = Some(Panic {
                    message,
                    location,
                    site,
                    frames,
                });
            });
        }));
    });
}

/// The frames of a printed backtrace that are in medic's crates (not this
/// one): `function at crates/medic-x/src/file.rs:line:col`.
fn medic_frames(backtrace: &str) -> Vec<String> {
    let lines: Vec<&str> = backtrace.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        let Some(path) = line.strip_prefix("at ") else {
            continue;
        };
        let ours = path.contains("crates/medic-") && !path.contains("crates/medic-fuzz");
        if !ours {
            continue;
        }
        let path = path
            .find("crates/medic-")
            .map_or(path, |start| &path[start..]);
        let function = i
            .checked_sub(1)
            .and_then(|j| lines.get(j))
            .map(|f| f.trim().split_once(": ").map_or(f.trim(), |(_, name)| name))
            .unwrap_or("?");
        out.push(format!("{function} at {path}"));
    }
    out
}

/// Runs `target` on `data`, catching a panic. Features are returned on
/// success.
pub fn execute(target: &Target, data: &[u8]) -> Result<Features, Panic> {
    execute_with(target, data, true)
}

fn execute_with(target: &Target, data: &[u8], backtrace: bool) -> Result<Features, Panic> {
    install_hook();
    CATCHING.with(|c| c.set(true));
    BACKTRACE.with(|b| b.set(backtrace));
    let mut features = Features::default();
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(data, &mut features)));
    CATCHING.with(|c| c.set(false));
    match result {
        Ok(()) => Ok(features),
        Err(_) => Err(LAST
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| Panic {
                message: "(panic not recorded)".to_owned(),
                location: "(unknown)".to_owned(),
                site: None,
                frames: Vec::new(),
            })),
    }
}

// === The run ===

/// Past this many kept inputs, new ones replace random old ones.
const MAX_CORPUS: usize = 4096;
/// Findings beyond this many distinct places are counted, not minimized.
const MAX_FINDINGS: usize = 16;
/// How long minimizing one finding may take.
const MINIMIZE_TIME: Duration = Duration::from_secs(5);

/// One input taking longer than this is a finding too (a hang): the input
/// is printed and saved, and the process exits, since a stuck call cannot
/// be interrupted. Debug builds are slow: generous.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Fuzzes `target` within `budget`, starting from `seed`. Findings are
/// saved under `out_dir/<target>/` when given.
pub fn fuzz(target: &Target, budget: Budget, seed: u64, out_dir: Option<&Path>) -> Report {
    let start = Instant::now();
    let names = std::env::var("MEDIC_FUZZ_FEATURES").is_ok_and(|v| v == "1");
    NAMES_ON.store(names, Ordering::Relaxed);
    let mut rng = Rng::new(seed);
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut hits: HashMap<String, u64> = HashMap::new();
    let mut execs: u64 = 0;
    let watch = Watchdog::start(target, out_dir);

    let over = |execs: u64| {
        budget.execs.is_some_and(|n| execs >= n)
            || budget.time.is_some_and(|t| start.elapsed() >= t)
    };

    let seeds = (target.seeds)();
    let mut queue = seeds.into_iter();
    while !over(execs) {
        let input = match queue.next() {
            Some(seed) => seed,
            None => next_input(&mut rng, &corpus, target),
        };
        execs += 1;
        watch.begin(&input);
        let result = execute(target, &input);
        watch.end();
        match result {
            Ok(features) => {
                let mut new = false;
                for f in features.as_slice() {
                    new |= seen.insert(*f);
                }
                if new || corpus.is_empty() {
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        let i = rng.below(corpus.len());
                        corpus[i] = input;
                    }
                }
            }
            Err(panic) => {
                let key = panic.key();
                let n = hits.entry(key.clone()).or_insert(0);
                *n += 1;
                if *n > 1 || findings.len() >= MAX_FINDINGS {
                    continue;
                }
                let (minimized, panic, tries) = minimize(target, &input, panic, &watch);
                execs += tries;
                let file = out_dir.and_then(|dir| save(dir, target.name, &minimized));
                let finding = Finding {
                    description: (target.describe)(&minimized),
                    panic,
                    input,
                    minimized,
                    file,
                    key,
                    hits: 0,
                };
                eprintln!(
                    "{}",
                    finding_text(target.name, findings.len() + 1, &finding)
                );
                findings.push(finding);
            }
        }
    }
    watch.stop();
    if names {
        let all = named_features();
        eprintln!("{}: {} named features, by count:", target.name, all.len());
        for (name, n) in &all {
            eprintln!("  {n:>9}  {}", name.replace('\u{1f}', " | "));
        }
    }
    for f in &mut findings {
        f.hits = hits.get(&f.key).copied().unwrap_or(1);
    }
    Report {
        target: target.name,
        seed,
        execs,
        elapsed: start.elapsed(),
        corpus: corpus.len(),
        features: seen.len(),
        findings,
    }
}

fn save(dir: &Path, target: &str, data: &[u8]) -> Option<PathBuf> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join(format!("crash-{:016x}", hash(data)));
    std::fs::write(&file, data).ok()?;
    Some(file)
}

/// Shrinks `input` while it still panics at the same place: removes
/// chunks, halving their size, for at most [`MINIMIZE_TIME`].
fn minimize(
    target: &Target,
    input: &[u8],
    panic: Panic,
    watch: &Watchdog,
) -> (Vec<u8>, Panic, u64) {
    let start = Instant::now();
    let location = panic.location.clone();
    let mut best = input.to_vec();
    let mut tries = 0;
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < best.len() {
            if start.elapsed() > MINIMIZE_TIME {
                return finish_minimize(target, best, panic, tries);
            }
            let mut candidate = best.clone();
            candidate.drain(i..(i + chunk).min(best.len()));
            tries += 1;
            watch.begin(&candidate);
            let result = execute_with(target, &candidate, false);
            watch.end();
            match result {
                Err(p) if p.location == location => best = candidate,
                _ => i += chunk,
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    finish_minimize(target, best, panic, tries)
}

fn finish_minimize(
    target: &Target,
    best: Vec<u8>,
    found: Panic,
    tries: u64,
) -> (Vec<u8>, Panic, u64) {
    // The minimized input's own panic, with its backtrace.
    match execute(target, &best) {
        Err(p) => (best, p, tries + 1),
        Ok(_) => (best, found, tries + 1),
    }
}

/// The next input: mostly a mutated kept one, sometimes fresh random bytes.
fn next_input(rng: &mut Rng, corpus: &[Vec<u8>], target: &Target) -> Vec<u8> {
    if corpus.is_empty() || rng.one_in(16) {
        let max = match rng.below(4) {
            0 => 16,
            1 => 64,
            2 => 256,
            _ => target.max_len,
        }
        .min(target.max_len);
        let n = rng.below(max + 1);
        return (0..n).map(|_| rng.byte()).collect();
    }
    let mut data = corpus[rng.below(corpus.len())].clone();
    let rounds = if rng.one_in(8) {
        1 + rng.below(16)
    } else {
        1 + rng.below(4)
    };
    for _ in 0..rounds {
        mutate(rng, &mut data, corpus, target);
    }
    data.truncate(target.max_len);
    data
}

const INTERESTING_BYTES: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'"'];
const INTERESTING_WORDS: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
    1 << 32,
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], target: &Target) {
    let len = data.len();
    match rng.below(11) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // An interesting byte, or a random one.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = if rng.one_in(2) {
                INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]
            } else {
                rng.byte()
            };
        }
        // Insert random bytes.
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            data.splice(at..at, bytes);
        }
        // Delete a range.
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(32));
            data.drain(at..at + n);
        }
        // Copy a range elsewhere.
        4 if len > 1 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(64));
            let chunk = data[from..from + n].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        // An interesting little-endian word.
        5 if len > 0 => {
            let w = INTERESTING_WORDS[rng.below(INTERESTING_WORDS.len())].to_le_bytes();
            let n = [1, 2, 4, 8][rng.below(4)];
            let at = rng.below(len);
            for (k, b) in w.iter().take(n).enumerate() {
                if let Some(slot) = data.get_mut(at + k) {
                    *slot = *b;
                }
            }
        }
        // Splice with another kept input.
        6 if !corpus.is_empty() => {
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        // Insert or overwrite with a dictionary token.
        7 | 8 if !target.dictionary.is_empty() => {
            let token = target.dictionary[rng.below(target.dictionary.len())].as_bytes();
            let at = rng.below(len + 1);
            if rng.one_in(2) || at + token.len() > len {
                data.splice(at..at, token.iter().copied());
            } else {
                data[at..at + token.len()].copy_from_slice(token);
            }
        }
        // Truncate.
        9 if len > 0 => {
            data.truncate(rng.below(len));
        }
        // Nudge a byte.
        _ if len > 0 => {
            let i = rng.below(len);
            data[i] = if rng.one_in(2) {
                data[i].wrapping_add(1 + rng.byte() % 4)
            } else {
                data[i].wrapping_sub(1 + rng.byte() % 4)
            };
        }
        _ => data.push(rng.byte()),
    }
}

// === Hangs ===

/// Watches the execution in progress from another thread: one that runs
/// longer than [`HANG_LIMIT`] is reported and ends the process.
/// The execution in progress: when it began, and its input.
type Current = Arc<Mutex<Option<(Instant, Vec<u8>)>>>;

#[derive(Debug)]
struct Watchdog {
    current: Current,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(target: &Target, out_dir: Option<&Path>) -> Self {
        let current: Current = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, t) = (current.clone(), stop.clone(), *target);
        let out_dir = out_dir.map(Path::to_path_buf);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let hung = c.lock().ok().and_then(|g| {
                    g.as_ref()
                        .filter(|(at, _)| at.elapsed() > HANG_LIMIT)
                        .map(|(_, d)| d.clone())
                });
                if let Some(data) = hung {
                    let file = out_dir.as_deref().and_then(|d| save(d, t.name, &data));
                    eprintln!(
                        "=== {}: HANG: one input ran longer than {:?}\nsaved: {:?}\ninput ({} bytes): b\"{}\"\nmeaning:\n{}",
                        t.name,
                        HANG_LIMIT,
                        file,
                        data.len(),
                        data.escape_ascii(),
                        (t.describe)(&data)
                    );
                    std::process::exit(101);
                }
            }
        });
        Self {
            current,
            stop,
            thread: Some(thread),
        }
    }

    fn begin(&self, data: &[u8]) {
        if let Ok(mut g) = self.current.lock() {
            *g = Some((Instant::now(), data.to_vec()));
        }
    }

    fn end(&self) {
        if let Ok(mut g) = self.current.lock() {
            *g = None;
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// === Settings from the environment ===

/// The budget from `MEDIC_FUZZ_SECS` (seconds per target, default
/// `default_secs`) and `MEDIC_FUZZ_EXECS` (executions per target; no limit
/// by default).
pub fn budget_from_env(default_secs: f64) -> Budget {
    let secs = std::env::var("MEDIC_FUZZ_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(default_secs);
    let execs = std::env::var("MEDIC_FUZZ_EXECS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Budget {
        time: Some(Duration::from_secs_f64(secs)),
        execs,
    }
}

/// The seed from `MEDIC_FUZZ_SEED`: a number, or `random` for one from the
/// clock. Default: fixed per target, so CI's run is repeatable.
pub fn seed_from_env(target: &str) -> u64 {
    match std::env::var("MEDIC_FUZZ_SEED") {
        Ok(s) if s.trim() == "random" => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
            }),
        Ok(s) => s.trim().parse().unwrap_or_else(|_| hash(target.as_bytes())),
        Err(_) => hash(target.as_bytes()),
    }
}
