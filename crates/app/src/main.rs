//! The `app` binary: load the configuration, start logging, build the server and serve until
//! SIGTERM or Ctrl-C. Start-up failures print one line saying what to fix.

use std::process::ExitCode;

use anyhow::Context;
use app::{Application, config, startup, telemetry, wiring};

// glibc malloc showed as an eighth of the proxy's CPU time under load; mimalloc's thread-local
// free lists suit the many short-lived allocations of a request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        #[allow(clippy::print_stdout, reason = "the version is the command's output")]
        {
            println!(
                "api-key-rotator {} ({})",
                env!("CARGO_PKG_VERSION"),
                wiring::edition()
            );
        }
        return ExitCode::SUCCESS;
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr, reason = "logging may not be set up yet")]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = config::load()?;
    telemetry::init(&settings.log_level, settings.log_json);
    startup::announce_generated_secrets(&settings);
    let application = Application::build(settings)
        .await
        .context("start-up failed")?;
    tracing::info!(
        port = application.port(),
        edition = wiring::edition(),
        "api-key-rotator listening"
    );
    application
        .run_until_stopped()
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
