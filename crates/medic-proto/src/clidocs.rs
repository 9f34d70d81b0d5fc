//! Man pages and shell completions for medic's three binaries, generated
//! from their clap definitions so they cannot drift from `--help`: one page
//! for the program and one per subcommand (`medicctl-pause(1)`, as git
//! does), and completion scripts for bash, zsh and fish. The Debian
//! packages install what `PROGRAM man --out DIR` and `PROGRAM completions
//! SHELL` write.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Command;

/// Writes the man pages of `cmd` (named `name`) into `dir`: `name.1`, and
/// `name-SUB.1` for each visible subcommand, recursively. Returns the
/// files written.
pub fn write_man_pages(cmd: Command, name: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.name(name.to_owned()).bin_name(name.to_owned());
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, name, dir, &mut written)?;
    Ok(written)
}

fn page(cmd: &Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(name.to_owned())).render(&mut roff)?;
    std::fs::File::create(&path)?.write_all(&roff)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// The completion script of `cmd` (named `name`) for `shell`.
pub fn completion(mut cmd: Command, name: &str, shell: clap_complete::Shell) -> Vec<u8> {
    // Into memory first: clap_complete panics on a failed write, and a
    // closed pipe is not worth a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("x")
            .about("Does x")
            .subcommand(Command::new("run").about("Runs"))
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn a_page_per_visible_subcommand_and_none_for_hidden_ones() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let files = write_man_pages(cli(), "medicx", dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = files
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(names, ["medicx.1", "medicx-run.1"]);
        let main = std::fs::read_to_string(&files[0]).unwrap_or_default();
        assert!(
            main.contains(".TH medicx 1") && main.contains("Does x"),
            "{main}"
        );
    }
}
