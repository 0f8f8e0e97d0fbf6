//! Runs after the integration suite (scripts/test runs it second): every log line the
//! service wrote must be free of what the tests sent that is sensitive — user ids, message
//! texts, the API key and raw IPs — and the security lines must carry their fields.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test crate: a panic is how a test fails")]

use std::collections::BTreeSet;
use std::path::PathBuf;

fn files(prefix: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("test-logs");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    out.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)));
    out
}

#[test]
fn no_log_line_of_the_integration_suite_holds_sensitive_data() {
    let logs = files("api-");
    let sent = files("sent-");
    assert!(!logs.is_empty() && !sent.is_empty(), "no captured logs: run scripts/test, which runs the integration suite first");
    // Short values (single words) would match by accident; every test id and message is longer.
    let sensitive: BTreeSet<String> = sent
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| l.trim().to_string())
        .filter(|l| l.chars().count() >= 8)
        .collect();
    let mut lines = 0usize;
    let mut security_lines = 0usize;
    let mut leaks = vec![];
    for p in &logs {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            if line.contains("\"target\":\"security\"") {
                security_lines += 1;
                for field in ["request_id", "user_hash", "ip_hash", "status", "outcome", "latency_ms"] {
                    assert!(line.contains(&format!("\"{field}\"")), "security line without {field}: {line}");
                }
            }
            for s in &sensitive {
                if line.contains(s.as_str()) {
                    leaks.push(format!("{s:?} in {line}"));
                }
            }
        }
    }
    assert!(security_lines >= 20, "expected a security line per request, saw {security_lines} of {lines} lines");
    assert!(leaks.is_empty(), "{} leaks, first: {:?}", leaks.len(), leaks.iter().take(5).collect::<Vec<_>>());
}
