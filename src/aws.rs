//! The AWS SDK's shared configuration, for the store and the secret: credentials and region
//! from the configuration when it has them (as in Lambda), and a local endpoint for tests.

use std::time::Duration;

/// What the AWS SDK would otherwise find by probing its provider chains.
#[derive(Debug, Clone, Default)]
pub struct AwsEnv {
    /// `AWS_ACCESS_KEY_ID` is set (Lambda always sets it): use the environment's credentials.
    pub credentials_in_env: bool,
    pub region: Option<String>,
    /// `AWS_DEFAULT_REGION`: the region when `region` is unset.
    pub default_region: Option<String>,
}

impl AwsEnv {
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref().or(self.default_region.as_deref())
    }
}

/// The SDK configuration for a client of `endpoint` (a local stand-in; AWS when `None`).
pub async fn sdk_config(aws: &AwsEnv, endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        // No attempt or operation timeout: every call waits until the request's deadline
        // (store/deadline.rs), so a slow service shortens waits instead of multiplying them.
        .timeout_config(aws_config::timeout::TimeoutConfig::builder().connect_timeout(Duration::from_secs(1)).build())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
    // Lambda always sets these: naming them skips building the default provider chains
    // (its web-identity provider alone builds an STS client and loads the system
    // certificates, ~10 ms of a cold start here).
    if aws.credentials_in_env {
        loader = loader.credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new());
    }
    if let Some(region) = aws.region() {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
        // A local stand-in accepts any credentials; supply some when none are configured.
        if !aws.credentials_in_env {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new("local", "local", None, None, "local"));
        }
        if aws.region().is_none() {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    loader.load().await
}
