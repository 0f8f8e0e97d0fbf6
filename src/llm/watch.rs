//! The model's end, watched: at start and then once an hour (on the first request of each
//! hour, so a Lambda that sleeps between invocations watches too), the days to the shutdown
//! of the model in service go out as the `ModelDaysToShutdown` metric, and within
//! [`WARN_DAYS`] a warning names the date and the replacement that will be called from then.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

use super::table::{InService, WARN_DAYS};
use crate::metrics::{self, Sink};

#[derive(Debug)]
pub struct ModelWatch {
    /// The hour (since the epoch) last watched; `i64::MIN` before the first.
    last_hour: AtomicI64,
}

impl Default for ModelWatch {
    fn default() -> Self {
        Self { last_hour: AtomicI64::new(i64::MIN) }
    }
}

impl ModelWatch {
    /// Watches once per hour of `now`; `true` when it watched.
    pub fn check(&self, models: &InService, now: DateTime<Utc>, sink: &Sink) -> bool {
        let hour = now.timestamp().div_euclid(3600);
        if self.last_hour.swap(hour, Ordering::Relaxed) == hour {
            return false;
        }
        let today = now.date_naive();
        let Some(spec) = models.on(today) else { return true };
        if let Ok(configured) = models.configured() {
            if configured.name != spec.name {
                tracing::warn!(configured = %configured.name, in_service = %spec.name, "the configured model is no longer called: its replacement is");
            }
        }
        let Some(days) = spec.days_to_shutdown(today) else { return true };
        sink.write(metrics::model_days_to_shutdown(&spec.name, days, now.timestamp_millis()).to_string());
        if days <= WARN_DAYS {
            let shutdown = spec.shutdown.map(|d| d.to_string()).unwrap_or_default();
            let replacement = spec.replacement.clone().unwrap_or_default();
            tracing::warn!(model = %spec.name, %shutdown, %replacement, days, "the model shuts down soon: from that day its replacement is called");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::table::Models;
    use chrono::TimeZone;

    #[test]
    fn the_days_to_shutdown_go_out_once_an_hour() -> Result<(), Box<dyn std::error::Error>> {
        let models = InService::new(Models::builtin()?, "gpt-4o")?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let sink = Sink::Memory(lines.clone());
        let watch = ModelWatch::default();
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 9, 15, 0).single().ok_or("date")?;
        assert!(watch.check(&models, at, &sink));
        assert!(!watch.check(&models, at + chrono::Duration::minutes(30), &sink), "the same hour");
        assert!(watch.check(&models, at + chrono::Duration::hours(1), &sink));
        let lines = lines.lock().map_err(|_| "lock")?.clone();
        assert_eq!(lines.len(), 2);
        let line: serde_json::Value = serde_json::from_str(&lines[0])?;
        assert_eq!((line["Model"].as_str(), line[metrics::MODEL_DAYS_TO_SHUTDOWN].as_i64()), (Some("gpt-4o"), Some(43)));
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"], serde_json::json!([["Service", "Model"]]));
        // The default row has no shutdown: nothing to count down.
        let luna = InService::new(Models::builtin()?, "gpt-6-luna")?;
        let none = Sink::Memory(Default::default());
        assert!(ModelWatch::default().check(&luna, at, &none));
        assert!(matches!(&none, Sink::Memory(l) if l.lock().map(|l| l.is_empty()).unwrap_or(false)));
        Ok(())
    }
}
