//! The model table (`prompts/models.json`, checked by `schema/model-table.json`): what each
//! model costs and which request parameters it takes. `OPENAI_MODEL` picks a row; a model the
//! table does not list refuses to start, so a price is never guessed.

use crate::limits::{parse_dollars, Prices};
use crate::models::{ModelRow, ModelRowOutputLimit, ModelRowReasoningEffort, ModelTable};

/// The configured model is not a row of the table, or the table breaks its schema.
#[derive(Debug, thiserror::Error)]
#[error("OPENAI_MODEL is not valid: {0}")]
pub struct ModelTableError(String);

/// The table as built into the binary.
pub const TABLE: &str = include_str!("../../prompts/models.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputLimit {
    MaxTokens,
    /// Bounds reasoning and reply together (reasoning models).
    MaxCompletionTokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

/// One row of the table, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub prices: Prices,
    pub output_limit: OutputLimit,
    pub temperature: bool,
    pub reasoning_effort: Option<Effort>,
}

/// The row for `name`.
pub fn spec(name: &str) -> Result<ModelSpec, ModelTableError> {
    let invalid = ModelTableError;
    let value: serde_json::Value = serde_json::from_str(TABLE).map_err(|e| invalid(format!("prompts/models.json is not JSON: {e}")))?;
    let schemas = crate::schemas::get().map_err(|e| invalid(e.to_string()))?;
    let problems = crate::schemas::violations(&schemas.model_table, &value);
    if let Some(p) = problems.first() {
        return Err(invalid(format!("prompts/models.json: {} {}", p.field, p.problem)));
    }
    let table: ModelTable = serde_json::from_value(value).map_err(|e| invalid(format!("prompts/models.json: {e}")))?;
    let Some(row) = table.models.get(name) else {
        let known: Vec<&str> = table.models.keys().map(String::as_str).collect();
        return Err(invalid(format!("{name} is not in prompts/models.json (known: {}); add its row with its prices", known.join(", "))));
    };
    parse(name, row)
}

fn parse(name: &str, row: &ModelRow) -> Result<ModelSpec, ModelTableError> {
    let dollars = |v: &str| parse_dollars(v).map_err(|problem| ModelTableError(format!("{name}: {problem}")));
    Ok(ModelSpec {
        name: name.to_string(),
        prices: Prices {
            input_micro: dollars(row.input_per_mtok.as_str())?,
            cached_input_micro: dollars(row.cached_input_per_mtok.as_str())?,
            output_micro: dollars(row.output_per_mtok.as_str())?,
        },
        output_limit: match row.output_limit {
            ModelRowOutputLimit::MaxTokens => OutputLimit::MaxTokens,
            ModelRowOutputLimit::MaxCompletionTokens => OutputLimit::MaxCompletionTokens,
        },
        temperature: row.temperature,
        reasoning_effort: row.reasoning_effort.map(|e| match e {
            ModelRowReasoningEffort::Minimal => Effort::Minimal,
            ModelRowReasoningEffort::Low => Effort::Low,
            ModelRowReasoningEffort::Medium => Effort::Medium,
            ModelRowReasoningEffort::High => Effort::High,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_gpt_4o_at_its_prices() -> Result<(), ModelTableError> {
        let s = spec("gpt-4o")?;
        assert_eq!(s.prices, Prices { input_micro: 2_500_000, cached_input_micro: 1_250_000, output_micro: 10_000_000 });
        assert_eq!((s.output_limit, s.temperature, s.reasoning_effort), (OutputLimit::MaxTokens, true, None));
        Ok(())
    }

    #[test]
    fn a_reasoning_model_takes_max_completion_tokens_and_no_temperature() -> Result<(), ModelTableError> {
        let s = spec("gpt-5-mini")?;
        assert_eq!((s.output_limit, s.temperature, s.reasoning_effort), (OutputLimit::MaxCompletionTokens, false, Some(Effort::Minimal)));
        Ok(())
    }

    #[test]
    fn an_unknown_model_is_refused_with_the_known_ones_named() {
        let e = spec("gpt-3.5-turbo").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("gpt-3.5-turbo is not in prompts/models.json") && e.contains("gpt-4o"), "{e}");
    }
}
