//! The time the domain runs on: the system clock, or a settable one in tests (a conversation
//! over two simulated days).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// A fixed offset from the system clock, so time still moves within a test.
    Offset(Arc<Mutex<Duration>>),
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Offset(d) => Utc::now() + d.lock().map(|d| *d).unwrap_or_else(|_| Duration::zero()),
        }
    }

    /// Moves a test clock forward; the system clock is not moved.
    pub fn advance(&self, by: Duration) {
        if let Self::Offset(d) = self {
            if let Ok(mut d) = d.lock() {
                *d += by;
            }
        }
    }
}
