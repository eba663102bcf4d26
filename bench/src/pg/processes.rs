//! `steps` and `burndown` with `--backend postgres --processes N`: N engine processes drain
//! one schema, this one and N-1 children (this program again, started with
//! `__pg-drain <schema> <concurrency>`), as `--processes` does on a shared SQLite file; see
//! `crate::processes` for how they start together and report their CPU.

use std::process::ExitCode;

use super::{url, Schema};
use crate::processes::{serve, Children};
use crate::{BenchResult, Config};

/// Starts the other processes of a drain on `schema` when `--processes` asks for several, each
/// with its engine open and its gate closed.
pub(crate) fn children(
    cfg: &Config,
    schema: &Schema,
    concurrency: usize,
) -> BenchResult<Option<Children>> {
    if cfg.processes < 2 {
        return Ok(None);
    }
    let concurrency = concurrency.to_string();
    let args = [
        "__pg-drain".as_ref(),
        schema.name().as_ref(),
        concurrency.as_ref(),
    ];
    Children::spawn_with(cfg.processes - 1, &args).map(Some)
}

/// A child: `__pg-drain <schema> <concurrency>`.
pub(crate) fn child(args: &[String]) -> ExitCode {
    let run = || -> BenchResult {
        let [_, schema, concurrency] = args else {
            return Err("usage: __pg-drain <schema> <concurrency>".into());
        };
        let concurrency: usize = concurrency.parse()?;
        let options = durable_jobs::postgres::PostgresOptions::new(url()).schema(schema);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (engine, app) =
                crate::workloads::steps::engine_postgres(options, Some(concurrency)).await?;
            serve(engine, app).await
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: drain child: {e}");
            ExitCode::FAILURE
        }
    }
}
