//! Where the Python interop environment (kombu, Celery, OpenTelemetry's
//! Python SDK) and its scripts are, for the suites that run them.

use std::path::PathBuf;

/// The workspace's root directory.
#[must_use]
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's interpreter (`AMQP_INTEROP_PYTHON` overrides it). A
/// test fails with directions when it is missing, never skips.
#[must_use]
pub fn python() -> PathBuf {
    let python = std::env::var_os("AMQP_INTEROP_PYTHON")
        .map_or_else(|| workspace().join(".venv/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "no Python interop environment at {}: run scripts/interop-venv (the test command does)",
        python.display()
    );
    python
}

/// The directory of the interop scripts.
#[must_use]
pub fn scripts() -> PathBuf {
    workspace().join("tests/interop")
}

/// One interop script by file name.
#[must_use]
pub fn script(name: &str) -> PathBuf {
    scripts().join(name)
}
