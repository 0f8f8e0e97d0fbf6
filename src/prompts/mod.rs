//! Building the prompt. Templates live in `prompts/` (the prompt authors' room): embedded at
//! build time, or read from `PROMPTS_DIR` so authors can iterate without a build. Loading is
//! strict: an undefined variable is a render error, never an empty string. Values are
//! inserted as data; a golfer's `{{ }}` or `{% %}` is never evaluated.
//!
//! `vars` is what templates receive, `pack` fits the rendered messages into the token budget.

pub mod pack;
pub mod vars;

pub use pack::{pack, PackError, Packed};
pub use vars::{Detail, HistoryTurn, PromptMessage, PromptRole, PromptVars, ReplyVars};

use std::path::Path;

use tera::Tera;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/prompts.rs"));
}

pub const SYSTEM: &str = "system.tera";
pub const CONTEXT: &str = "context.tera";
pub const MESSAGE: &str = "message.tera";
pub const OFFLINE: &str = "offline.tera";
pub const FALLBACK: &str = "fallback.tera";
pub const LIMIT: &str = "limit.tera";
pub const FILTERED: &str = "filtered.tera";
pub const REFUSAL: &str = "refusal.tera";
pub const SHORTER: &str = "shorter.tera";
const REQUIRED: [&str; 9] = [SYSTEM, CONTEXT, MESSAGE, OFFLINE, FALLBACK, LIMIT, FILTERED, REFUSAL, SHORTER];

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("template {0} is missing from prompts/")]
    Missing(&'static str),
    #[error("templates do not load: {0}")]
    Load(String),
    #[error("template {template} does not render: {problem}")]
    Render { template: String, problem: String },
    #[error("reading prompts: {0}")]
    Io(#[from] std::io::Error),
}

/// Tera's errors nest the useful part; flatten the chain into one line.
fn chain(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[derive(Debug, Clone)]
pub struct Prompts {
    tera: Tera,
}

impl Prompts {
    /// The templates compiled into the binary.
    pub fn embedded() -> Result<Self, PromptError> {
        Self::from_pairs(embedded::EMBEDDED.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect())
    }

    /// Every `*.tera` in `dir`, read now.
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let mut pairs = vec![];
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("tera") {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                pairs.push((name, std::fs::read_to_string(&path)?));
            }
        }
        Self::from_pairs(pairs)
    }

    /// The configured folder (`PROMPTS_DIR`), else the embedded templates.
    pub fn load(dir: Option<&Path>) -> Result<Self, PromptError> {
        match dir {
            Some(dir) => Self::from_dir(dir),
            None => Self::embedded(),
        }
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, PromptError> {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.add_raw_templates(pairs).map_err(|e| PromptError::Load(chain(&e)))?;
        for name in REQUIRED {
            if !tera.get_template_names().any(|n| n == name) {
                return Err(PromptError::Missing(name));
            }
        }
        Ok(Self { tera })
    }

    pub fn render<T: serde::Serialize>(&self, template: &str, vars: &T) -> Result<String, PromptError> {
        let ctx = tera::Context::from_serialize(vars).map_err(|e| PromptError::Render {
            template: template.to_string(),
            problem: chain(&e),
        })?;
        self.render_context(template, &ctx)
    }

    /// Renders with a context built once for several templates (`tera::Context::from_serialize`).
    pub fn render_context(&self, template: &str, ctx: &tera::Context) -> Result<String, PromptError> {
        let out = self.tera.render(template, ctx).map_err(|e| PromptError::Render {
            template: template.to_string(),
            problem: chain(&e),
        })?;
        Ok(out.trim().to_string())
    }
}
