//! The model table (`prompts/models.json`, checked by `schema/model-table.json`): what each
//! model costs, which request parameters it takes, when it shuts down and which row replaces
//! it. `OPENAI_MODEL` picks a row; a model the table does not list refuses to start, so a price
//! is never guessed. [`InService`] is the row a process calls now: the configured one, its
//! replacement from the configured row's shutdown date on, or from the moment the provider
//! says the model is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::NaiveDate;

use crate::limits::{parse_dollars, Prices};
use crate::models::{Effort, ModelRow, ModelRowOutputLimit, ModelRowTemperature, ModelTable};

/// The configured model is not a row of the table, or the table breaks its rules.
#[derive(Debug, thiserror::Error)]
#[error("OPENAI_MODEL is not valid: {0}")]
pub struct ModelTableError(String);

/// The table as built into the binary.
pub const TABLE: &str = include_str!("../../prompts/models.json");

/// How close a shutdown must be for the service to warn (and `models check` to fail).
pub const WARN_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputLimit {
    MaxTokens,
    /// Bounds reasoning and reply together (reasoning models).
    MaxCompletionTokens,
}

/// One row of the table, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub prices: Prices,
    pub output_limit: OutputLimit,
    /// `temperature` is sent (the row accepts it with the effort it sends).
    pub temperature: bool,
    pub reasoning_effort: Option<Effort>,
    /// The provider's announced shutdown (UTC day), if any.
    pub shutdown: Option<NaiveDate>,
    /// The row that takes over.
    pub replacement: Option<String>,
    /// At most how many of the model's own tokens one token of ours (o200k) becomes, in
    /// thousandths (1000 for OpenAI's models, whose tokenizer is ours).
    pub tokens_per_o200k_milli: u32,
    /// The structured-output schema is billed as prompt tokens (OpenAI); a grammar-enforcing
    /// server never puts it in the prompt.
    pub schema_in_prompt: bool,
}

impl ModelSpec {
    /// What the model is asked as a string: its name and every parameter that changes the
    /// request (a part of the prompt version).
    pub fn asked(&self) -> String {
        format!("{}|{:?}|{:?}|{}", self.name, self.output_limit, self.reasoning_effort, self.temperature)
    }

    /// `ours` tokens as counted here (o200k), in the model's own tokens at most.
    pub fn model_tokens(&self, ours: u64) -> u64 {
        (ours * u64::from(self.tokens_per_o200k_milli)).div_ceil(1000)
    }

    /// The prompt's token limit as counted here: what the request limit leaves after the reply
    /// (`prompt_tokens`, in the model's tokens), in o200k tokens, less the structured-output
    /// schema's. The limit is the model's own count: packing to it keeps prompt + reply within
    /// `TOKEN_LIMIT_PER_REQUEST` as the model's server counts them. The schema's tokens come
    /// out of it where the model bills them as prompt.
    pub fn prompt_token_limit(&self, prompt_tokens: usize) -> usize {
        let ours = prompt_tokens as u64 * 1000 / u64::from(self.tokens_per_o200k_milli.max(1000));
        let schema = if self.schema_in_prompt { super::response_format_tokens() } else { 0 };
        usize::try_from(ours).unwrap_or(usize::MAX).saturating_sub(schema)
    }

    /// Whole days from `today` to the shutdown (0 on the day itself, negative after it).
    pub fn days_to_shutdown(&self, today: NaiveDate) -> Option<i64> {
        self.shutdown.map(|d| (d - today).num_days())
    }
}

/// Every row, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Models {
    rows: BTreeMap<String, ModelSpec>,
}

impl Models {
    /// The table built into the binary.
    pub fn builtin() -> Result<Self, ModelTableError> {
        Self::parse(TABLE)
    }

    /// A table from its JSON: the schema, then the rules a schema cannot say.
    pub fn parse(json: &str) -> Result<Self, ModelTableError> {
        let invalid = ModelTableError;
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| invalid(format!("prompts/models.json is not JSON: {e}")))?;
        let schemas = crate::schemas::get().map_err(|e| invalid(e.to_string()))?;
        if let Some(p) = crate::schemas::violations(&schemas.model_table, &value).first() {
            return Err(invalid(format!("prompts/models.json: {} {}", p.field, p.problem)));
        }
        let table: ModelTable = serde_json::from_value(value).map_err(|e| invalid(format!("prompts/models.json: {e}")))?;
        let rows = table.models.iter().map(|(name, row)| Ok((name.clone(), parse(name, row)?))).collect::<Result<BTreeMap<_, _>, _>>()?;
        for spec in rows.values() {
            if let Some(r) = spec.replacement.as_ref().filter(|r| !rows.contains_key(r.as_str())) {
                return Err(invalid(format!("{}: its replacement {r} is not a row", spec.name)));
            }
        }
        Ok(Self { rows })
    }

    /// The row for `name`.
    pub fn spec(&self, name: &str) -> Result<ModelSpec, ModelTableError> {
        self.rows.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.rows.keys().map(String::as_str).collect();
            ModelTableError(format!("{name} is not in prompts/models.json (known: {}); add its row with its prices", known.join(", ")))
        })
    }

    /// The row to call on `today` for `name`: it, or, once it has shut down, its replacement
    /// (and so on, should that one have shut down too).
    pub fn on(&self, name: &str, today: NaiveDate) -> Option<&ModelSpec> {
        let mut spec = self.rows.get(name)?;
        for _ in 0..self.rows.len() {
            match (&spec.replacement, spec.shutdown) {
                (Some(next), Some(day)) if day <= today => spec = self.rows.get(next)?,
                _ => break,
            }
        }
        Some(spec)
    }

    pub fn rows(&self) -> impl Iterator<Item = &ModelSpec> {
        self.rows.values()
    }
}

/// The row for `name` in the built-in table.
pub fn spec(name: &str) -> Result<ModelSpec, ModelTableError> {
    Models::builtin()?.spec(name)
}

fn parse(name: &str, row: &ModelRow) -> Result<ModelSpec, ModelTableError> {
    let invalid = |problem: String| ModelTableError(format!("{name}: {problem}"));
    let dollars = |v: &str| parse_dollars(v).map_err(invalid);
    if let Some(e) = row.reasoning_effort.filter(|e| !row.efforts.contains(e)) {
        return Err(invalid(format!("reasoning_effort {e} is not one of the efforts it accepts")));
    }
    let shutdown =
        row.shutdown.as_ref().map(|d| crate::clock::parse_date(d.as_str()).ok_or_else(|| invalid(format!("shutdown: {} is not a date as YYYY-MM-DD", d.as_str())))).transpose()?;
    Ok(ModelSpec {
        name: name.to_string(),
        prices: Prices {
            input_micro: dollars(row.input_per_mtok.as_str())?,
            cached_input_micro: dollars(row.cached_input_per_mtok.as_str())?,
            cache_write_micro: row.cache_write_per_mtok.as_ref().map(|p| dollars(p.as_str())).transpose()?,
            output_micro: dollars(row.output_per_mtok.as_str())?,
        },
        output_limit: match row.output_limit {
            ModelRowOutputLimit::MaxTokens => OutputLimit::MaxTokens,
            ModelRowOutputLimit::MaxCompletionTokens => OutputLimit::MaxCompletionTokens,
        },
        temperature: match row.temperature {
            ModelRowTemperature::Always => true,
            ModelRowTemperature::EffortNone => row.reasoning_effort == Some(Effort::None),
            ModelRowTemperature::Never => false,
        },
        reasoning_effort: row.reasoning_effort,
        shutdown,
        replacement: row.replacement.clone(),
        tokens_per_o200k_milli: row.tokens_per_o200k.as_ref().map(|r| ratio(r.as_str())).transpose().map_err(invalid)?.unwrap_or(1000),
        schema_in_prompt: row.schema_in_prompt.unwrap_or(true),
    })
}

/// A decimal ratio ("1.35") in thousandths; below 1 would loosen the token limit on a guess.
fn ratio(v: &str) -> Result<u32, String> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let frac = format!("{frac:0<3}");
    let milli = whole.parse::<u32>().ok().zip(frac.get(..3).and_then(|f| f.parse::<u32>().ok())).map(|(w, f)| w * 1000 + f);
    match milli {
        Some(m) if (1000..=4000).contains(&m) => Ok(m),
        _ => Err(format!("tokens_per_o200k {v} is not a ratio from 1 to 4")),
    }
}

/// The row a process calls now. It follows the configured row's shutdown date, and moves to
/// the replacement for good when the provider answers that the model is gone.
#[derive(Debug)]
pub struct InService {
    models: Models,
    configured: String,
    /// Set when the provider said the model is gone: the row called from then on.
    replaced: RwLock<Option<String>>,
}

impl InService {
    pub fn new(models: Models, configured: &str) -> Result<Arc<Self>, ModelTableError> {
        models.spec(configured)?;
        Ok(Arc::new(Self { models, configured: configured.to_string(), replaced: RwLock::new(None) }))
    }

    /// The configured row.
    pub fn configured(&self) -> Result<ModelSpec, ModelTableError> {
        self.models.spec(&self.configured)
    }

    /// The row to call on `today`.
    pub fn on(&self, today: NaiveDate) -> Option<ModelSpec> {
        let replaced = self.replaced.read().ok().and_then(|r| r.clone());
        self.models.on(replaced.as_deref().unwrap_or(&self.configured), today).cloned()
    }

    /// The row `name`, if the table has one.
    pub fn named(&self, name: &str) -> Option<ModelSpec> {
        self.models.spec(name).ok()
    }

    /// The row called for `variant_model` (a variant's own row) or else the model in service.
    pub fn row(&self, variant_model: Option<&str>, today: NaiveDate) -> Option<ModelSpec> {
        match variant_model {
            Some(name) => self.models.on(name, today).cloned(),
            None => self.on(today),
        }
    }

    /// The provider says `gone` does not exist: from now on its replacement is called.
    /// `None` when it has none (or another request already moved on from it).
    pub fn replace(&self, gone: &ModelSpec, today: NaiveDate) -> Option<ModelSpec> {
        let next = self.models.on(gone.replacement.as_deref()?, today)?.clone();
        let mut replaced = self.replaced.write().ok()?;
        if replaced.as_deref().is_some_and(|r| r != gone.name && r != next.name) {
            return None;
        }
        *replaced = Some(next.name.clone());
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn the_default_row_has_no_shutdown_and_never_starves_the_reply() -> Result<(), ModelTableError> {
        let s = spec("gpt-6-luna")?;
        assert_eq!(s.prices, Prices { input_micro: 100_000, cached_input_micro: 10_000, cache_write_micro: Some(125_000), output_micro: 500_000 });
        assert_eq!((s.output_limit, s.reasoning_effort, s.temperature), (OutputLimit::MaxCompletionTokens, Some(Effort::None), true));
        assert_eq!((s.shutdown, s.replacement), (None, None));
        Ok(())
    }

    #[test]
    fn gpt_4o_stays_a_row_with_its_date_and_replacement() -> Result<(), ModelTableError> {
        let s = spec("gpt-4o")?;
        assert_eq!((s.output_limit, s.temperature, s.reasoning_effort), (OutputLimit::MaxTokens, true, None));
        assert_eq!((s.shutdown, s.replacement.as_deref()), (Some(day("2027-01-14")), Some("gpt-6-luna")));
        let models = Models::builtin()?;
        assert_eq!(models.on("gpt-4o", day("2027-01-13")).map(|s| s.name.as_str()), Some("gpt-4o"));
        assert_eq!(models.on("gpt-4o", day("2027-01-14")).map(|s| s.name.as_str()), Some("gpt-6-luna"), "from the shutdown day on");
        Ok(())
    }

    #[test]
    fn a_reasoning_row_without_effort_none_takes_no_temperature() -> Result<(), ModelTableError> {
        let s = spec("gpt-6.1-sol")?;
        assert_eq!((s.output_limit, s.temperature, s.reasoning_effort), (OutputLimit::MaxCompletionTokens, false, Some(Effort::Low)));
        Ok(())
    }

    #[test]
    fn every_row_with_a_shutdown_names_a_row_and_every_effort_is_accepted() -> Result<(), ModelTableError> {
        let models = Models::builtin()?;
        for s in models.rows() {
            assert!(!s.name.is_empty());
            if s.shutdown.is_some() {
                let next = s.replacement.as_deref().map(|r| models.spec(r)).transpose()?;
                assert!(next.is_some_and(|n| n.shutdown.is_none_or(|d| Some(d) > s.shutdown)), "{} is replaced by a row that outlives it", s.name);
            }
        }
        Ok(())
    }

    #[test]
    fn the_tables_rules_refuse_a_broken_table() {
        let row = |extra: &str| {
            format!(
                r#"{{"models":{{"a":{{"input_per_mtok":"1","cached_input_per_mtok":"1","output_per_mtok":"1","output_limit":"max_tokens","efforts":["low"],"temperature":"never","note":"n",{extra}}}}}}}"#
            )
        };
        let err = |json: String| Models::parse(&json).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(Models::parse(&row(r#""shutdown":null,"replacement":null"#)).is_ok());
        assert!(!err(row(r#""shutdown":"2027-01-14","replacement":null"#)).is_empty(), "a shutdown needs a replacement");
        assert!(err(row(r#""shutdown":"2027-01-14","replacement":"b""#)).contains("its replacement b is not a row"));
        assert!(err(row(r#""shutdown":null,"replacement":null,"reasoning_effort":"high""#)).contains("not one of the efforts"));
    }

    #[test]
    fn a_model_the_provider_says_is_gone_is_replaced_for_good() -> Result<(), ModelTableError> {
        let service = InService::new(Models::builtin()?, "gpt-4o")?;
        let today = day("2026-12-02");
        let gpt4o = service.on(today).ok_or_else(|| ModelTableError("no row".into()))?;
        assert_eq!(gpt4o.name, "gpt-4o");
        assert_eq!(service.replace(&gpt4o, today).map(|s| s.name), Some("gpt-6-luna".to_string()));
        assert_eq!(service.on(today).map(|s| s.name), Some("gpt-6-luna".to_string()));
        let luna = service.on(today).ok_or_else(|| ModelTableError("no row".into()))?;
        assert_eq!(service.replace(&luna, today), None, "the default has no replacement");
        Ok(())
    }

    #[test]
    fn a_self_hosted_row_packs_to_its_own_tokenizer_and_bills_nothing() -> Result<(), ModelTableError> {
        let local = spec("smollm2-135m-instruct")?;
        assert_eq!((local.prices, local.reasoning_effort, local.output_limit), (Prices::default(), None, OutputLimit::MaxTokens));
        assert_eq!((local.tokens_per_o200k_milli, local.schema_in_prompt), (1350, false));
        assert_eq!(local.prompt_token_limit(1100), 814, "1,100 of its tokens are 814 of ours; no schema in its prompt");
        assert_eq!(local.model_tokens(100), 135);
        let luna = spec("gpt-6-luna")?;
        assert_eq!(luna.prompt_token_limit(1100), 1100 - crate::llm::response_format_tokens(), "o200k itself, less the schema it bills");
        assert_eq!(luna.model_tokens(100), 100);
        assert_eq!((ratio("1.2"), ratio("1.25"), ratio("2")), (Ok(1200), Ok(1250), Ok(2000)));
        assert!(ratio("0.9").is_err() && ratio("5").is_err() && ratio("x").is_err(), "below 1 would loosen the limit");
        Ok(())
    }

    #[test]
    fn an_unknown_model_is_refused_with_the_known_ones_named() {
        let e = spec("gpt-3.5-turbo").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("gpt-3.5-turbo is not in prompts/models.json") && e.contains("gpt-6-luna"), "{e}");
    }
}
