//! The deployment agrees with the code: key schema, index and TTL names, metric names, env
//! var names, the request model, IAM statements, the dashboard and the routes. The template
//! is plain YAML (long-form intrinsics), so it parses as data here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test crate: a panic is how a test fails")]

use std::collections::BTreeSet;

use coach_api::{config, metrics, store::keys};
use serde_json::Value;

const TEMPLATE: &str = "infra/lambda-deployment.yaml";

fn template() -> Value {
    let text = std::fs::read_to_string(TEMPLATE).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{TEMPLATE}: {e}"))
}

fn json_file(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    &t["Resources"][name]["Properties"]
}

/// A function's properties as SAM deploys them: `Globals.Function` under its own, the
/// environment variables of both merged.
fn function(t: &Value, name: &str) -> Value {
    let mut f = t["Globals"]["Function"].clone();
    for (k, v) in resource(t, name).as_object().unwrap() {
        f[k] = v.clone();
    }
    let mut vars = t["Globals"]["Function"]["Environment"]["Variables"].as_object().cloned().unwrap_or_default();
    vars.extend(resource(t, name)["Environment"]["Variables"].as_object().cloned().unwrap_or_default());
    f["Environment"]["Variables"] = Value::Object(vars);
    f
}

const FUNCTIONS: [&str; 2] = ["CoachFunction", "CoachStreamFunction"];

#[test]
fn the_table_has_the_keys_index_and_ttl_the_code_uses() {
    let t = template();
    let table = resource(&t, "CoachingConversationsTable");
    assert_eq!(table["TableName"], "coaching-conversations");
    assert_eq!(table["KeySchema"][0]["AttributeName"], keys::PK);
    assert_eq!(table["KeySchema"][0]["KeyType"], "HASH");
    let gsi = &table["GlobalSecondaryIndexes"][0];
    assert_eq!(gsi["IndexName"], keys::USER_INDEX);
    assert_eq!(gsi["KeySchema"][0]["AttributeName"], keys::USER_INDEX_PK);
    assert_eq!(gsi["KeySchema"][1]["AttributeName"], keys::USER_INDEX_SK);
    assert_eq!(gsi["Projection"]["ProjectionType"], "ALL");
    assert_eq!(table["TimeToLiveSpecification"]["AttributeName"], keys::TTL_ATTRIBUTE);
    assert_eq!(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true);
    assert_eq!(table["SSESpecification"]["SSEEnabled"], true);
    // On-demand by default; provisioned capacity (and its auto-scaling) only when asked for.
    assert_eq!(table["BillingMode"]["Ref"], "TableBillingMode");
    assert_eq!(t["Parameters"]["TableBillingMode"]["Default"], "PAY_PER_REQUEST");
    assert_eq!(table["ProvisionedThroughput"]["Fn::If"][0], "Provisioned");
    assert_eq!(t["Resources"]["TableWriteScaling"]["Condition"], "Provisioned");
    // The AWS CLI script creates the same table.
    let script = std::fs::read_to_string("infra/dynamodb-table-creation.sh").unwrap();
    for name in [keys::PK, keys::USER_INDEX, keys::USER_INDEX_PK, keys::USER_INDEX_SK, keys::TTL_ATTRIBUTE, "PAY_PER_REQUEST"] {
        assert!(script.contains(name), "dynamodb-table-creation.sh lacks {name}");
    }
    // And the IAM policy names the analyses index the code queries.
    let policy = std::fs::read_to_string("infra/iam-role-policy.json").unwrap();
    assert!(policy.contains(keys::ANALYSES_USER_INDEX));
}

#[test]
fn the_function_is_configured_as_the_seed_asks_with_known_env_vars_only() {
    let t = template();
    let stream = function(&t, "CoachStreamFunction");
    let f = &function(&t, "CoachFunction");
    // The streamed route's function: the same binary and settings, in streaming mode.
    assert_eq!(stream["Environment"]["Variables"]["LAMBDA_RESPONSE_MODE"], "streaming");
    assert!(f["Environment"]["Variables"].get("LAMBDA_RESPONSE_MODE").is_none(), "the JSON routes stay buffered");
    for k in ["CodeUri", "Runtime", "MemorySize", "Timeout", "Policies"] {
        assert_eq!(stream[k], f[k], "{k}");
    }
    for name in stream["Environment"]["Variables"].as_object().unwrap().keys() {
        assert!(config::reads(name), "the template sets {name}, which the code never reads");
    }
    assert_eq!(f["Runtime"], "provided.al2023");
    assert_eq!(f["MemorySize"], 1024);
    assert_eq!(f["Timeout"], 30);
    assert_eq!(f["ReservedConcurrentExecutions"], 100);
    assert_eq!(t["Parameters"]["Architecture"]["Default"], "arm64");
    let vars = f["Environment"]["Variables"].as_object().unwrap();
    for name in vars.keys() {
        assert!(config::reads(name), "the template sets {name}, which the code never reads");
    }
    assert_eq!(vars["AUTH_MODE"], "cognito");
    // The keys are read from Secrets Manager at run time, never resolved into the environment.
    assert!(vars.get("OPENAI_API_KEY").is_none() && vars.get("LOG_HASH_KEY").is_none(), "no key in the environment");
    assert!(!serde_json::to_string(vars).unwrap().contains("resolve:secretsmanager"));
    assert_eq!(vars["OPENAI_SECRET_ARN"]["Ref"], "OpenAISecretArn");
    let statements = f["Policies"][0]["Statement"].as_array().unwrap();
    let secret = statements.iter().find(|s| s["Sid"] == "ModelKeySecret").expect("the function may read its secret");
    assert_eq!((secret["Action"][0].as_str(), secret["Resource"][0]["Ref"].as_str()), (Some("secretsmanager:GetSecretValue"), Some("OpenAISecretArn")));
}

#[test]
fn alarms_and_dashboard_use_the_metrics_the_service_emits() {
    let t = template();
    let emitted = [
        metrics::CONVERSATION_REQUESTS,
        metrics::TOKENS_USED,
        metrics::RESPONSE_TIME,
        metrics::ERROR_RATE,
        metrics::COST_PER_DAY,
        metrics::USER_ACTIVE_CONVERSATIONS,
        metrics::DEGRADED_REPLIES,
        metrics::CONTENT_FILTERED,
        metrics::BILLED_UNUSABLE,
        metrics::MODEL_REFUSALS,
        metrics::BREAKER_OPEN,
        metrics::FIRST_DELTA_TIME,
        metrics::MODEL_REPLACED,
    ];
    let alarms: Vec<(&str, &Value)> = ["HighTokenUsageAlarm", "HighErrorRateAlarm", "SlowResponsesAlarm", "DailyCostLimitAlarm"].iter().map(|a| (*a, resource(&t, a))).collect();
    let expected = [
        ("HighTokenUsageAlarm", "TokensUsed", 10000.0),
        ("HighErrorRateAlarm", "ErrorRate", 5.0),
        ("SlowResponsesAlarm", "ResponseTime", 5000.0),
        ("DailyCostLimitAlarm", "CostPerDay", 100.0),
    ];
    for ((name, alarm), (ename, metric, threshold)) in alarms.iter().zip(expected) {
        assert_eq!(*name, ename);
        assert_eq!(alarm["Namespace"], metrics::NAMESPACE);
        assert_eq!(alarm["MetricName"], metric);
        let threshold_value = match &alarm["Threshold"] {
            Value::Object(r) => t["Parameters"][r["Ref"].as_str().unwrap()]["Default"].as_f64(),
            v => v.as_f64(),
        };
        assert_eq!(threshold_value, Some(threshold), "{name}");
        assert_eq!(alarm["Dimensions"][0]["Value"], metrics::SERVICE);
        assert!(emitted.contains(&metric));
    }
    let dashboard = json_file("infra/cloudwatch-dashboard.json");
    let inline: Value = serde_json::from_str(resource(&t, "CoachingDashboard")["DashboardBody"]["Fn::Sub"].as_str().unwrap()).unwrap();
    assert_eq!(inline, dashboard, "the template's dashboard is infra/cloudwatch-dashboard.json");
    let shown: BTreeSet<String> = dashboard["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["properties"]["metrics"].as_array().cloned().unwrap_or_default())
        .filter(|m| m[0] == metrics::NAMESPACE)
        .map(|m| m[1].as_str().unwrap().to_string())
        .collect();
    for name in shown.iter() {
        assert!(emitted.contains(&name.as_str()), "the dashboard charts {name}, which is never emitted");
    }
    for name in &emitted[..6] {
        assert!(shown.contains(*name), "the dashboard misses {name}");
    }
}

/// The model's shutdown is watched: an alarm below 14 days on the metric the service emits
/// (whatever the model's name: a Metrics Insights query over the Model dimension), the same
/// number on the dashboard, and the model a parameter of the stack.
#[test]
fn an_alarm_fires_two_weeks_before_the_model_shuts_down() {
    let t = template();
    let alarm = resource(&t, "ModelShutdownAlarm");
    let query = alarm["Metrics"][0]["Expression"].as_str().unwrap();
    assert!(query.contains(metrics::MODEL_DAYS_TO_SHUTDOWN) && query.contains(metrics::NAMESPACE) && query.contains("Model"), "{query}");
    assert_eq!((alarm["Threshold"].as_f64(), alarm["ComparisonOperator"].as_str()), (Some(14.0), Some("LessThanThreshold")));
    let dashboard = json_file("infra/cloudwatch-dashboard.json").to_string();
    assert!(dashboard.contains(metrics::MODEL_DAYS_TO_SHUTDOWN) && dashboard.contains("-ModelShutdown"), "the dashboard shows the days and the alarm");
    for f in FUNCTIONS {
        assert_eq!(function(&t, f)["Environment"]["Variables"]["OPENAI_MODEL"]["Ref"], "ModelName", "{f}");
    }
    assert_eq!(t["Parameters"]["ModelName"]["Default"], "gpt-6-luna");
    coach_api::llm::table::spec(t["Parameters"]["ModelName"]["Default"].as_str().unwrap()).expect("the default is a row of the table");
}

/// Variants and prompt versions can be compared from the logs: the query kept in infra/ and
/// the dashboard read the properties the service writes on every answer's and rating's line.
#[test]
fn the_variant_query_and_the_ratings_widget_read_what_the_service_writes() {
    let query = std::fs::read_to_string("infra/insights/variants.query").unwrap();
    let outcome = metrics::Outcome { prompt_version: Some("abc123abc123".into()), variant: Some("base".into()), model: Some("gpt-6-luna".into()), ..metrics::Outcome::default() };
    let answer = metrics::RequestMetrics { outcome: outcome.clone(), response_ms: 12.0, ..Default::default() }.to_emf(0);
    let rating = metrics::RequestMetrics { outcome: metrics::Outcome { rating: Some(true), ..outcome }, ..Default::default() }.to_emf(0);
    for field in ["PromptVersion", "Variant", "Answers", "AnsweredMs", metrics::TOKENS_USED, metrics::DEGRADED_REPLIES] {
        assert!(query.contains(field), "the query reads {field}");
        assert!(answer.get(field).is_some(), "an answer's line has {field}: {answer}");
    }
    for field in [metrics::FEEDBACK_UP, metrics::FEEDBACK_DOWN, "PromptVersion", "Variant"] {
        assert!(query.contains(field) && rating.get(field).is_some(), "{field}: {rating}");
    }
    assert!(rating.get("Answers").is_none(), "a rating is not an answer");
    let dashboard = json_file("infra/cloudwatch-dashboard.json").to_string();
    assert!(dashboard.contains(metrics::FEEDBACK_UP) && dashboard.contains("by PromptVersion"), "the ratings widget");
}

#[test]
fn the_api_imports_the_generated_request_model() {
    let text = std::fs::read_to_string(TEMPLATE).unwrap();
    let generated = coach_api::schemas::APIGW_REQUEST_MODEL;
    let model: Value = serde_json::from_str(generated).unwrap();
    let line = format!("        CoachingChatRequest: {}", serde_json::to_string(&model).unwrap());
    let start = text.find("# BEGIN GENERATED MODEL").unwrap();
    let line_start = start + text[start..].find('\n').unwrap() + 1;
    let line_end = line_start + text[line_start..].find('\n').unwrap();
    if std::env::var("EXPECTORATE").as_deref() == Ok("overwrite") {
        std::fs::write(TEMPLATE, format!("{}{}{}", &text[..line_start], line, &text[line_end..])).unwrap();
        return;
    }
    let inline: Value = serde_yaml::from_str::<Value>(&text[line_start..line_end]).unwrap()["CoachingChatRequest"].clone();
    assert_eq!(inline, model, "the template's model is stale: EXPECTORATE=overwrite scripts/test rewrites it");
    let t = template();
    let chat = &t["Resources"]["CoachFunction"]["Properties"]["Events"]["Chat"]["Properties"];
    assert_eq!(chat["RequestModel"]["Model"], "CoachingChatRequest");
    assert_eq!(chat["RequestModel"]["ValidateBody"], true);
}

#[test]
fn routes_agree_between_template_gateway_config_and_openapi() {
    let t = template();
    let openapi: Value = serde_json::from_str(coach_api::schemas::OPENAPI).unwrap();
    let documented: BTreeSet<(String, String)> =
        openapi["paths"].as_object().unwrap().iter().flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| (p.clone(), m.to_uppercase()))).collect();
    let events: Vec<(&str, &Value)> = FUNCTIONS.iter().flat_map(|f| resource(&t, f)["Events"].as_object().unwrap().values().map(move |e| (*f, &e["Properties"]))).collect();
    let deployed: BTreeSet<(String, String)> = events.iter().map(|(_, e)| (e["Path"].as_str().unwrap().to_string(), e["Method"].as_str().unwrap().to_uppercase())).collect();
    // Only the streamed route streams, from the streaming function, on a regional endpoint
    // (edge-optimized endpoints give a stream 30 s of idle time, regional ones 5 minutes).
    for (f, e) in &events {
        let streamed = e["Path"] == coach_api::api::CHAT_STREAM_PATH;
        assert_eq!(e["ResponseTransferMode"] == "RESPONSE_STREAM", streamed, "{f} {}", e["Path"]);
        assert_eq!(*f == "CoachStreamFunction", streamed, "{f} {}", e["Path"]);
        // The chat posts carry the generated request model; the feedback post is validated
        // by the handler alone (schema/feedback-request.json), its errors in the error schema.
        if e["Method"] == "post" && e["Path"] != coach_api::api::routes::FEEDBACK_PATH {
            assert_eq!(e["RequestModel"]["Model"], "CoachingChatRequest", "{}", e["Path"]);
        }
    }
    assert_eq!(resource(&t, "CoachApi")["EndpointConfiguration"]["Type"], "REGIONAL");
    let configured: BTreeSet<(String, String)> = json_file("infra/api-gateway-config.json")["resources"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ms)| ms.as_array().unwrap().iter().map(move |m| (p.clone(), m.as_str().unwrap().to_string())))
        .collect();
    assert_eq!(deployed, documented);
    assert_eq!(configured, documented);
    let waf = &resource(&t, "WebAcl")["Rules"][0]["Statement"]["RateBasedStatement"];
    assert_eq!((waf["Limit"].as_u64(), waf["EvaluationWindowSec"].as_u64()), (Some(100), Some(60)));
}

#[test]
fn the_iam_policy_file_is_the_templates_least_privilege_policy() {
    let t = template();
    let policy = json_file("infra/iam-role-policy.json");
    let in_template = t["Resources"]["CoachFunction"]["Properties"]["Policies"][0]["Statement"].as_array().unwrap().clone();
    let actions = |stmts: &[Value], sid: &str| -> BTreeSet<String> {
        stmts.iter().filter(|s| s["Sid"] == sid).flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string())).collect()
    };
    let file_statements = policy["Statement"].as_array().unwrap().clone();
    for sid in ["CoachingTableReadWrite", "CoachingIndexQuery", "AnalysesSwingOnScreen", "AnalysesRecentSwings"] {
        assert_eq!(actions(&file_statements, sid), actions(&in_template, sid), "{sid}");
    }
    for s in file_statements.iter().chain(in_template.iter()) {
        assert_eq!(s["Effect"], "Allow");
        for a in s["Action"].as_array().unwrap() {
            assert!(!a.as_str().unwrap().contains('*'), "wildcard action {a}");
        }
    }
    let analyses: BTreeSet<String> = ["AnalysesSwingOnScreen", "AnalysesRecentSwings"].iter().flat_map(|sid| actions(&file_statements, sid)).collect();
    assert!(analyses.iter().all(|a| a == "dynamodb:BatchGetItem" || a == "dynamodb:Query"), "analyses stay read-only: {analyses:?}");
    let text = serde_json::to_string(&policy).unwrap();
    assert!(!text.chars().collect::<Vec<_>>().windows(12).any(|w| w.iter().all(|c| c.is_ascii_digit())), "no hard-coded account id");
}

#[test]
fn every_skipped_checkov_check_says_why() {
    let t = template();
    let mut skips = 0;
    for (name, r) in t["Resources"].as_object().unwrap() {
        for skip in r["Metadata"]["checkov"]["skip"].as_array().cloned().unwrap_or_default() {
            skips += 1;
            let why = skip["comment"].as_str().unwrap_or_default();
            assert!(why.split_whitespace().count() >= 8, "{name} skips {} without a reason", skip["id"]);
        }
    }
    assert!(skips > 0);
}

/// The README's configuration table is rendered from the table `Config` parses
/// (`config::VARS`); EXPECTORATE=overwrite rewrites it.
#[test]
fn the_readme_configuration_table_is_the_one_config_parses() {
    const BEGIN: &str = "<!-- BEGIN CONFIG TABLE (generated from src/config.rs: EXPECTORATE=overwrite cargo test --test infra) -->\n";
    const END: &str = "<!-- END CONFIG TABLE -->";
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme.find(BEGIN).expect("README lacks the config table's BEGIN marker") + BEGIN.len();
    let end = start + readme[start..].find(END).expect("README lacks the config table's END marker");
    let table = config::markdown_table();
    if std::env::var("EXPECTORATE").as_deref() == Ok("overwrite") {
        std::fs::write("README.md", format!("{}{}{}", &readme[..start], table, &readme[end..])).unwrap();
        return;
    }
    assert_eq!(&readme[start..end], table, "README's configuration table is stale: run EXPECTORATE=overwrite cargo test --test infra");
}

/// Degraded replies are answered with 200s, so only their share shows a revoked key or an
/// unreachable model: an alarm watches it, at a share the deployer sets.
#[test]
fn an_alarm_fires_when_degraded_replies_exceed_their_share() {
    let t = template();
    let alarm = resource(&t, "DegradedRepliesAlarm");
    assert_eq!(alarm["MetricName"], metrics::DEGRADED_REPLIES);
    assert_eq!(alarm["Statistic"], "Average", "0 or 1 per request: the average is the share");
    assert_eq!(alarm["Threshold"]["Ref"], "DegradedReplyShare");
    assert_eq!(t["Parameters"]["DegradedReplyShare"]["Default"].as_f64(), Some(0.2));
    let dashboard = json_file("infra/cloudwatch-dashboard.json");
    assert!(dashboard.to_string().contains("-DegradedReplies"), "the dashboard shows the alarm");
}

/// The CloudFormation AWS's SAM translator made of the template (`infra/sam-transform.py`,
/// run by scripts/test before this suite, with packaged-style code URIs): what `sam deploy`
/// would create, not what the SAM source says.
fn transformed() -> Value {
    let path = std::env::var("SAM_TRANSFORMED").unwrap_or_else(|_| panic!("SAM_TRANSFORMED is not set: run the tests with scripts/test, which transforms the template"));
    json_file(&path)
}

/// Each operation of the deployed REST API's body with its integration.
fn deployed_integrations(cfn: &Value) -> Vec<(String, String, Value)> {
    let api = cfn["Resources"].as_object().unwrap().values().find(|r| r["Type"] == "AWS::ApiGateway::RestApi").expect("a REST API");
    let mut out = vec![];
    for (path, item) in api["Properties"]["Body"]["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((path.clone(), method.clone(), op["x-amazon-apigateway-integration"].clone()));
        }
    }
    out
}

#[test]
fn as_deployed_only_the_streamed_route_streams_and_throttling_says_when_to_retry() {
    let cfn = transformed();
    let integrations = deployed_integrations(&cfn);
    let proxied: Vec<_> = integrations.iter().filter(|(_, _, i)| i["type"] == "aws_proxy").collect();
    assert_eq!(proxied.len(), coach_api::api::routes::ROUTES.len(), "one Lambda integration per route");
    for (path, method, integration) in proxied {
        let uri = integration["uri"]["Fn::Sub"].as_str().unwrap_or_default();
        if path == coach_api::api::CHAT_STREAM_PATH {
            assert!(uri.contains("/2021-11-15/functions/${CoachStreamFunction.Arn}/response-streaming-invocations"), "{method} {path}: {uri}");
            assert_eq!(integration["responseTransferMode"], "STREAM", "{method} {path}");
        } else {
            assert!(uri.contains("/2015-03-31/functions/${CoachFunction.Arn}/invocations"), "{method} {path} is buffered: {uri}");
            assert!(integration.get("responseTransferMode").is_none_or(|m| m == "BUFFERED"), "{method} {path}: {integration}");
        }
    }
    let api = cfn["Resources"].as_object().unwrap().values().find(|r| r["Type"] == "AWS::ApiGateway::RestApi").unwrap();
    let throttled = &api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]["THROTTLED"];
    assert_eq!(throttled["statusCode"], "429");
    assert_eq!(throttled["responseParameters"]["gatewayresponse.header.Retry-After"], "'60'", "{throttled}");
}

/// In production API Gateway answers every schema-invalid body itself, from these templates:
/// each must give a body the app can parse and that matches schema/error.json, whatever API
/// Gateway substitutes (its messages hold quotes and brackets; nothing is escaped).
#[test]
fn every_gateway_response_template_yields_a_valid_error_body() {
    let t = template();
    let responses = t["Resources"]["CoachApi"]["Properties"]["GatewayResponses"].as_object().unwrap().clone();
    assert!(responses.len() >= 7);
    let values = [
        ("$context.requestId", "6f1e9c1a-0b5e-4a8e-9d3c-2b7f0e5a4c11"),
        ("$context.error.validationErrorString", r#"[instance type (integer) does not match any allowed primitive type (allowed: ["string"])]"#),
        ("$context.error.messageString", r#""Invalid request body""#),
        ("$context.error.message", r#"Invalid "request" body [x]"#),
        ("$context.error.responseType", "BAD_REQUEST_BODY"),
    ];
    let validator = {
        let raw: Value = serde_json::from_str(coach_api::schemas::ERROR).unwrap();
        jsonschema::draft4::new(&raw).unwrap()
    };
    for (name, response) in responses {
        let template = response["ResponseTemplates"]["application/json"].as_str().unwrap_or_else(|| panic!("{name} has no JSON template"));
        let mut body = template.to_string();
        for (var, value) in values {
            body = body.replace(var, value);
        }
        assert!(!body.contains('$'), "{name} substitutes a variable this test does not know: {body}");
        let parsed: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}'s body does not parse ({e}): {body}"));
        let errors: Vec<String> = validator.iter_errors(&parsed).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?} in {body}");
    }
}
