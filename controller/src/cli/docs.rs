//! `drover completions SHELL` and `drover man`: shell completions and man pages,
//! generated from the same command definition the CLI parses with, so they never drift.

use std::path::PathBuf;

use clap::CommandFactory;

use super::Cli;

/// Flags of `drover completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover completions bash > /etc/bash_completion.d/drover
  drover completions zsh > \"${fpath[1]}/_drover\"
  drover completions fish > ~/.config/fish/completions/drover.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// Flags of `drover man`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover man | man -l -                          # read drover(1) now
  sudo drover man --out /usr/local/share/man/man1   # drover.1, drover-deploy.1, ...")]
pub struct ManArgs {
    /// Write one page per command (drover.1, drover-deploy.1, ...) into this directory
    /// instead of printing drover(1) on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "drover", &mut std::io::stdout());
    Ok(0)
}

/// Prints drover(1), or writes every page into `--out`.
pub fn man(args: ManArgs) -> anyhow::Result<i32> {
    use anyhow::Context;
    let cmd = Cli::command();
    match args.out {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            eprintln!("wrote man pages into {}", dir.display());
        }
    }
    Ok(0)
}
