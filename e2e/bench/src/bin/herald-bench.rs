//! `herald-bench`: load tool for Herald-protocol push servers. See [`herald_bench`].

use std::process::ExitCode;

use clap::Parser;
use herald_bench::cli::{Cli, Scenario};
use herald_bench::{run, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.scenario, Scenario::Worker) {
        worker::main();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Scenario::Compare(args) = &cli.scenario {
        // On Ctrl-C or SIGTERM the comparison future is dropped, and with it every server
        // it started (their guards stop them).
        let outcome = runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = herald_bench::compare::compare(args) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                _ = term.recv() => Err(anyhow::anyhow!("terminated")),
            }
        });
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        return match outcome {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("herald-bench compare: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let limit = cli.common.timeout;
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(limit, run::run(&cli.common, &cli.scenario)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "aborted after --timeout {}",
                humantime::format_duration(limit)
            )),
        }
    });
    // Worker processes are killed when their handles drop; don't wait for stray tasks.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(report) => {
            if cli.common.json {
                eprint!("{}", report.table());
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            match report.failure() {
                Some(why) => {
                    eprintln!("herald-bench: {why}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
