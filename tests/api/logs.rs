//! Captures every log line the service writes during the integration suite into
//! `target/test-logs/api-<pid>.jsonl`, and records what the tests sent that must never be
//! logged (user ids, message texts, the API key, IPs) in `target/test-logs/sent-<pid>.txt`.
//! `tests/log_scan.rs` reads both after the suite and fails on any leak.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("test-logs")
}

static SENT: OnceLock<Mutex<File>> = OnceLock::new();

fn open(name: &str) -> File {
    let _ = std::fs::create_dir_all(dir());
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir().join(format!("{name}-{}.{}", std::process::id(), if name == "api" { "jsonl" } else { "txt" })))
        .unwrap_or_else(|e| panic!("opening test log file: {e}"))
}

pub fn install() {
    let capture = tracing_subscriber::fmt::layer().json().with_writer(Mutex::new(open("api"))).with_filter(EnvFilter::new("coach_api=trace,security=trace"));
    let show = std::env::var_os("TEST_LOG")
        .map(|_| tracing_subscriber::fmt::layer().with_test_writer().with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))));
    let _ = tracing_subscriber::registry().with(capture).with(show).try_init();
    let _ = SENT.set(Mutex::new(open("sent")));
    sensitive("sk-test-not-a-real-key");
    sensitive("127.0.0.1");
}

/// Records a value the service must never log.
pub fn sensitive(value: &str) {
    if let Some(f) = SENT.get() {
        if let Ok(mut f) = f.lock() {
            let one_line = value.replace('\n', " ");
            let _ = writeln!(f, "{one_line}");
        }
    }
}
