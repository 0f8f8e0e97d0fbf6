//! `coach-api models check`: the model table against the provider's own list (`GET /models`,
//! with each model's `shutdown_date` where the provider announces one). It prints a row per
//! table entry and fails when the configured model or its replacement is not listed, or
//! either shuts down within [`WARN_DAYS`], so a deploy pipeline can stop before golfers notice.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::settings::ModelConfig;
use super::table::{ModelSpec, Models, WARN_DAYS};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the provider's model list could not be read: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Table(#[from] super::table::ModelTableError),
}

#[derive(Debug, Deserialize)]
struct ModelList {
    data: Vec<Listed>,
}

#[derive(Debug, Deserialize)]
struct Listed {
    id: String,
    #[serde(default)]
    shutdown_date: Option<String>,
}

/// What the check found: the printed table and whether a deployment may go ahead.
#[derive(Debug)]
pub struct Report {
    pub table: String,
    pub ok: bool,
}

/// Reads the provider's list and compares it with the table.
pub async fn run(cfg: &ModelConfig, today: NaiveDate) -> Result<Report, CheckError> {
    let base = cfg.base_url.clone().unwrap_or_else(|| "https://api.openai.com/v1".into());
    let mut request = reqwest::Client::new().get(format!("{}/models", base.trim_end_matches('/')));
    if let Some(key) = &cfg.api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    let response = request.send().await.map_err(|e| CheckError::Unreachable(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(CheckError::Unreachable(format!("status {}", response.status())));
    }
    let list: ModelList = response.json().await.map_err(|e| CheckError::Unreachable(e.without_url().to_string()))?;
    let listed: BTreeMap<String, Option<NaiveDate>> = list.data.into_iter().map(|m| (m.id, m.shutdown_date.and_then(|d| crate::clock::parse_date(&d)))).collect();
    Ok(compare(&Models::builtin()?, &cfg.model, &listed, today))
}

/// The table against the provider's list on `today`.
pub fn compare(models: &Models, configured: &str, listed: &BTreeMap<String, Option<NaiveDate>>, today: NaiveDate) -> Report {
    let mut table = format!("{:<16} {:<8} {:<12} {:<12} {:<14} {}\n", "model", "listed", "table date", "provider", "replacement", "");
    let configured_row = models.spec(configured).ok();
    let watched: Vec<&str> = [Some(configured), configured_row.as_ref().and_then(|r| r.replacement.as_deref())].into_iter().flatten().collect();
    let mut ok = true;
    for spec in models.rows() {
        let provider = listed.get(&spec.name);
        let problem = problem(spec, provider, today);
        let role = match watched.iter().position(|w| *w == spec.name) {
            Some(0) => "configured",
            Some(_) => "replacement",
            None => "",
        };
        // A date that differs from the table's is shown, not failed: the table needs a look.
        if !role.is_empty() && problem.is_some_and(|p| p != DIFFERS) {
            ok = false;
        }
        let date = |d: Option<NaiveDate>| d.map_or_else(|| "none".to_string(), |d| d.to_string());
        let listed_text = if provider.is_some() { "yes" } else { "no" };
        let note = [role, problem.unwrap_or("")].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(": ");
        let _ = writeln!(
            table,
            "{:<16} {:<8} {:<12} {:<12} {:<14} {note}",
            spec.name,
            listed_text,
            date(spec.shutdown),
            provider.map_or_else(|| "-".to_string(), |d| date(*d)),
            spec.replacement.as_deref().unwrap_or("-"),
        );
    }
    if configured_row.is_none() {
        ok = false;
        let _ = writeln!(table, "{configured}: the configured model is not a row of the table");
    }
    Report { table, ok }
}

/// Why a row may not be relied on: not listed, or shutting down within the warning window
/// (by the table's date or the provider's).
fn problem(spec: &ModelSpec, provider: Option<&Option<NaiveDate>>, today: NaiveDate) -> Option<&'static str> {
    let Some(provider_date) = provider else { return Some("not listed by the provider") };
    let soon = |d: Option<NaiveDate>| d.is_some_and(|d| (d - today).num_days() <= WARN_DAYS);
    if soon(spec.shutdown) || soon(*provider_date) {
        return Some("shuts down within 30 days");
    }
    if provider_date.is_some() && *provider_date != spec.shutdown {
        return Some(DIFFERS);
    }
    None
}

const DIFFERS: &str = "the provider's date differs from the table's";
