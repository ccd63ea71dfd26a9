//! The `nixpack` binary: parse arguments, run the command, print the
//! diagnostic, exit with its code (0 ok, 1 user error, 2 usage/unexpected).

use std::process::ExitCode;

use clap::Parser;

use nixpack::cli::{Cli, Command};
use nixpack::commands;
use nixpack::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    miette::set_hook(Box::new(|_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .terminal_links(false)
                .width(100)
                .build(),
        )
    }))
    .ok();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{:?}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let out = nixpack::ui::Ui::new(cli.quiet, cli.verbose);
    match &cli.command {
        Command::Init(args) => {
            let created = commands::init::run(args)?;
            out.line(&format!("created {}", created.manifest.display()));
            if created.wrote_expression {
                out.line(&format!(
                    "created {}",
                    args.dir.join("default.nix").display()
                ));
            }
            out.line("next: edit nixpack.toml, then run `nixpack build`");
            Ok(())
        }
        Command::Render(args) => {
            let manifest = commands::load_manifest(cli.manifest_path.as_deref())?;
            for dir in commands::render::run(&manifest, args)? {
                out.line(&format!("rendered {}", dir.display()));
            }
            Ok(())
        }
        Command::Build(args) => {
            let manifest = commands::load_manifest(cli.manifest_path.as_deref())?;
            commands::build::run(manifest, args, out)
        }
        Command::Push(args) => {
            let manifest = commands::load_manifest(cli.manifest_path.as_deref())?;
            commands::push::run(manifest, args, out)
        }
        Command::Run(args) => {
            let manifest = commands::load_manifest(cli.manifest_path.as_deref())?;
            commands::run::run(manifest, args, out)
        }
        Command::Inspect(args) => {
            let manifest = commands::load_manifest(cli.manifest_path.as_deref())?;
            out.line(commands::inspect::run(&manifest, args)?.trim_end());
            Ok(())
        }
        Command::Why(args) => {
            let manifest = commands::load_manifest(cli.manifest_path.as_deref())?;
            out.line(commands::why::run(&manifest, args)?.trim_end());
            Ok(())
        }
        Command::Clean(args) => {
            let manifest = commands::load_manifest(cli.manifest_path.as_deref())?;
            commands::clean::run(&manifest, args, out)
        }
        Command::Gc(args) => commands::gc::run(args, out),
    }
}
