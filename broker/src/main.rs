//! `saga-broker`: Tansu 0.6.0's command line, with the storage patches of PATCHES.md.
//!
//! This is Tansu's own `main` (Apache-2.0, © Peter Morgan), less the client commands' error
//! hints, plus `--version` naming the patch level, which the install script compares.

use tansu_broker::{TracingFormat, otel};
use tansu_cli::{Cli, Result};
use tansu_sans_io::ErrorCode;
use tracing::{debug, error};

#[tokio::main]
async fn main() -> Result<ErrorCode> {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("saga-broker {}", env!("CARGO_PKG_VERSION"));
        return Ok(ErrorCode::None);
    }
    let _guard = otel::init(TracingFormat::Text)?;
    Cli::main()
        .await
        .inspect(|error_code| match error_code {
            ErrorCode::None => debug!("{}", error_code),
            _ => error!("{}", error_code),
        })
        .inspect_err(|err| error!("{err}"))
}
