//! The model key and the log-hash key, from Secrets Manager (`OPENAI_SECRET_ARN`): fetched at
//! start, and fetched again after the model answers 401 (a rotated key needs no redeploy).
//! Neither is ever in the function's environment, where GetFunctionConfiguration reads it.

use secrecy::SecretString;
use serde::Deserialize;

use crate::aws::AwsEnv;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret could not be read from Secrets Manager ({0})")]
    Unavailable(String),
    #[error("the secret is not a JSON object with an api_key (and optionally a log_hash_key)")]
    Shape,
}

/// What the secret holds.
#[derive(Deserialize)]
struct Value {
    api_key: String,
    log_hash_key: Option<String>,
}

pub struct Keys {
    pub api_key: SecretString,
    pub log_hash_key: Option<SecretString>,
}

/// Where the keys come from.
pub struct SecretSource {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl SecretSource {
    /// The secret `arn`, or `None` when keys come from the environment (local runs); a local
    /// stand-in for Secrets Manager at `endpoint` (tests).
    pub async fn connect(arn: Option<&str>, aws: &AwsEnv, endpoint: Option<&str>) -> Option<Self> {
        let arn = arn?.to_string();
        let shared = crate::aws::sdk_config(aws, endpoint).await;
        Some(Self { client: aws_sdk_secretsmanager::Client::new(&shared), arn })
    }

    pub async fn fetch(&self) -> Result<Keys, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| SecretError::Unavailable(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string().chars().take(200).collect()))?;
        let value: Value = serde_json::from_str(out.secret_string().ok_or(SecretError::Shape)?).map_err(|_| SecretError::Shape)?;
        Ok(Keys { api_key: SecretString::from(value.api_key), log_hash_key: value.log_hash_key.map(SecretString::from) })
    }
}
