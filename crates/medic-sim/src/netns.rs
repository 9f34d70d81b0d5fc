//! Network namespaces for multi-host tests (Linux, root): every node (an
//! etcd member, a coordinator replica, a group of agents) gets a network
//! namespace of its own, joined to the others through a bridge, so that a
//! test can cut links between nodes the way a real network fails.
//!
//! # Topology
//!
//! A [`Net`] is one hub namespace holding a bridge (`br0`), and one
//! namespace per [`Node`]: the node's end of a veth pair is `eth0` in its
//! namespace with an address in the test's private `10.231.N.0/24`
//! (`N` picked by the test, distinct per test, so that tests can run in
//! parallel; the addresses never leave the namespaces anyway), and the
//! other end is enslaved to the bridge in the hub. `lo` is up in every
//! namespace. Nothing is created in the root namespace: interfaces are
//! created inside their namespaces (`ip -n`), so the machine's own
//! interfaces, routes and addresses are never touched.
//!
//! Namespace names are `mdc<pid>x<k>-<label>` (`k` counts the nets this
//! process made). Interface names are per namespace (`eth0`, `br0`, `v<n>`)
//! and well under Linux's 15 characters.
//!
//! # Clean-up
//!
//! Dropping the [`Net`] (also while a test panics) kills whatever still
//! runs in its namespaces and deletes them; deleting a namespace destroys
//! its interfaces. A test process killed outright cannot do that: every
//! [`Net::new`] first removes the namespaces of processes that no longer
//! exist, and kills what still runs in them.
//!
//! # Partitions
//!
//! [`Net::cut`] adds a `prohibit` route to the other node's address in each
//! node's namespace (`ip -n NS route add prohibit IP/32`): packets between
//! them are refused where they are sent, in both directions, as when a
//! firewall rejects them. Connecting fails at once; established
//! connections stall until their own timeouts. [`Net::heal`] deletes the
//! routes.
//!
//! # Running things inside
//!
//! Processes: [`Net::command`] is `ip netns exec NS PROGRAM`, which enters
//! the namespace and execs the program (the child's pid is the program's).
//! In-process clients: [`NsRuntime`] is a thread that enters a node's
//! namespace (`setns` on `/run/netns/NS`) and runs a current-thread tokio
//! runtime; every socket its tasks open lives in that namespace.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// The prefix of every namespace this module creates.
const PREFIX: &str = "mdc";

/// Nets made by this process, for unique names.
static NETS: AtomicUsize = AtomicUsize::new(0);

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[error("not root (euid {0})")]
    NotRoot(u32),
    /// `ip` failed.
    #[error("`ip {args}` failed: {message}")]
    Ip {
        /// Its arguments.
        args: String,
        /// Its error output, or why it did not run.
        message: String,
    },
    /// Entering a namespace, or starting a thread or runtime in it.
    #[error("{0}")]
    Enter(String),
    /// The net has no room for another node (253 per /24).
    #[error("no address left in {0}")]
    Full(String),
}

/// Runs `ip ARGS`; its error output is the error.
fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let fail = |message: String| NetnsError::Ip {
        args: args.join(" "),
        message,
    };
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run ip: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The names in `ip netns list` (each line is `NAME` or `NAME (id: N)`).
fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Kills every process in namespace `ns`, then deletes it. Best effort: a
/// clean-up reports nothing it cannot fix.
fn remove(ns: &str) {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    for pid in ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| *p != me)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = ip(&["netns", "del", ns]);
}

/// The pid in a name this module made (`mdc<pid>x<k>-...`).
fn owner(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    rest.split_once('-')?;
    pid.parse().ok()
}

/// Removes the namespaces left by test processes that are gone.
pub fn remove_leftovers() {
    for ns in namespaces() {
        if let Some(pid) = owner(&ns)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            remove(&ns);
        }
    }
}

/// One node: a namespace with one address on the net.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    /// The test's name for it (`etcd0`, `replica1`, `agents`).
    pub label: String,
    /// Its namespace (`mdc<pid>x<k>-<label>`).
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label, self.ip)
    }
}

/// A bridge in a hub namespace and the nodes joined to it; everything is
/// removed on drop.
#[derive(Debug)]
pub struct Net {
    tag: String,
    subnet: u8,
    hub: String,
    nodes: Vec<Node>,
    /// Prohibit routes in force: (namespace, destination).
    cuts: Mutex<BTreeSet<(String, Ipv4Addr)>>,
}

impl Net {
    /// A new net on `10.231.<subnet>.0/24`: the hub namespace and its
    /// bridge. Removes leftovers of dead test processes first.
    pub fn new(subnet: u8) -> Result<Net, NetnsError> {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            return Err(NetnsError::NotRoot(euid.as_raw()));
        }
        remove_leftovers();
        let tag = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{tag}-hub");
        ip(&["netns", "add", &hub])?;
        // From here on, Drop removes whatever was made.
        let net = Net {
            tag,
            subnet,
            hub,
            nodes: Vec::new(),
            cuts: Mutex::new(BTreeSet::new()),
        };
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.hub, "link", "set", "br0", "up"])?;
        ip(&["-n", &net.hub, "link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// Adds a node named `label` (letters, digits, `-`; short): its
    /// namespace, veth pair and the next free address.
    pub fn add_node(&mut self, label: &str) -> Result<Node, NetnsError> {
        let n = self.nodes.len() + 1;
        let host = u8::try_from(n)
            .ok()
            .filter(|h| *h < 255)
            .ok_or_else(|| NetnsError::Full(self.cidr()))?;
        let node = Node {
            label: label.to_owned(),
            ns: format!("{}-{label}", self.tag),
            ip: Ipv4Addr::new(10, 231, self.subnet, host),
        };
        ip(&["netns", "add", &node.ns])?;
        self.nodes.push(node.clone());
        let peer = format!("v{n}");
        // Both ends are created inside namespaces: the node's `eth0`, and
        // its peer moved straight into the hub.
        ip(&[
            "-n", &node.ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns",
            &self.hub,
        ])?;
        ip(&["-n", &self.hub, "link", "set", &peer, "master", "br0"])?;
        ip(&["-n", &self.hub, "link", "set", &peer, "up"])?;
        let addr = format!("{}/24", node.ip);
        ip(&["-n", &node.ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &node.ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &node.ns, "link", "set", "lo", "up"])?;
        Ok(node)
    }

    /// The net's address range.
    pub fn cidr(&self) -> String {
        format!("10.231.{}.0/24", self.subnet)
    }

    /// The nodes, in the order added.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// `ip netns exec NS PROGRAM`: a command that runs `program` inside
    /// `node`'s namespace.
    pub fn command(&self, node: &Node, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &node.ns]).arg(program);
        c
    }

    fn add_route(&self, ns: &str, to: Ipv4Addr) -> Result<(), NetnsError> {
        let mut cuts = self.cuts.lock().unwrap_or_else(PoisonError::into_inner);
        if cuts.contains(&(ns.to_owned(), to)) {
            return Ok(());
        }
        ip(&["-n", ns, "route", "add", "prohibit", &format!("{to}/32")])?;
        cuts.insert((ns.to_owned(), to));
        Ok(())
    }

    fn del_route(&self, ns: &str, to: Ipv4Addr) -> Result<(), NetnsError> {
        let mut cuts = self.cuts.lock().unwrap_or_else(PoisonError::into_inner);
        if !cuts.contains(&(ns.to_owned(), to)) {
            return Ok(());
        }
        ip(&["-n", ns, "route", "del", "prohibit", &format!("{to}/32")])?;
        cuts.remove(&(ns.to_owned(), to));
        Ok(())
    }

    /// Cuts the link between `a` and `b`, both ways. Cutting a cut link
    /// does nothing.
    pub fn cut(&self, a: &Node, b: &Node) -> Result<(), NetnsError> {
        self.add_route(&a.ns, b.ip)?;
        self.add_route(&b.ns, a.ip)
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: &Node, b: &Node) -> Result<(), NetnsError> {
        self.del_route(&a.ns, b.ip)?;
        self.del_route(&b.ns, a.ip)
    }

    /// Restores every link cut.
    pub fn heal_all(&self) -> Result<(), NetnsError> {
        let cuts: Vec<(String, Ipv4Addr)> = self
            .cuts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        for (ns, to) in cuts {
            self.del_route(&ns, to)?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in &self.nodes {
            remove(&node.ns);
        }
        remove(&self.hub);
    }
}

/// A thread inside a node's namespace running a current-thread tokio
/// runtime: tasks spawned on it ([`NsRuntime::spawn`]) open their sockets
/// in that namespace. Dropping it stops the runtime (its tasks are
/// cancelled) and joins the thread.
///
/// Threads inherit the namespace of the thread that creates them, so the
/// runtime's blocking pool (`spawn_blocking` from its tasks) is inside too.
/// Do not call `spawn_blocking` on its handle from another thread: that
/// thread would create the pool's thread, in its own namespace.
#[derive(Debug)]
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    /// Starts the thread in `node`'s namespace.
    pub fn start(node: &Node) -> Result<NsRuntime, NetnsError> {
        let path = format!("/run/netns/{}", node.ns);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{}", node.label))
            .spawn(move || {
                let entered = std::fs::File::open(&path)
                    .map_err(|e| format!("{path}: {e}"))
                    .and_then(|f| {
                        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| format!("setns {path}: {e}"))
                    })
                    .and_then(|()| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| format!("runtime in {path}: {e}"))
                    });
                match entered {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async {
                            let _ = stop_rx.await;
                        });
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| NetnsError::Enter(format!("cannot start a thread: {e}")))?;
        let handle = ready_rx
            .recv()
            .map_err(|_| NetnsError::Enter("the namespace thread died".to_owned()))?
            .map_err(NetnsError::Enter)?;
        Ok(NsRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `future` inside the namespace.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Its runtime's handle.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_reads_the_pid_of_names_this_module_makes() {
        assert_eq!(owner("mdc1234x0-hub"), Some(1234));
        assert_eq!(owner("mdc1234x12-etcd0"), Some(1234));
        assert_eq!(owner("mdcfoo-hub"), None);
        assert_eq!(owner("mdc1234x0"), None);
        assert_eq!(owner("other1234x0-hub"), None);
    }
}
