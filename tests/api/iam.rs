//! IAM from the calls: a scripted conversation runs through the recording DynamoDB proxy and
//! every permission its calls need (per transaction item, per index) must be granted by the
//! deployment template's policy and by `infra/iam-role-policy.json`; a grant no call used is
//! reported, and fails the test too (least privilege). DynamoDB Local enforces no IAM, so
//! this is where a missing permission shows before AWS denies it.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::dynamo_proxy::DynamoProxy;
use crate::helpers::{dynamodb_endpoint, spawn_with, TestApp};

/// (IAM action, resource as `table/NAME` or `table/NAME/index/INDEX`).
type Permission = (String, String);

fn needed(app: &TestApp, proxy: &DynamoProxy) -> BTreeSet<Permission> {
    let logical = |table: &str| {
        if table == app.config.table_coaching {
            "coaching-conversations".to_string()
        } else if table == app.config.table_analyses {
            "golf-coach-analyses".to_string()
        } else {
            panic!("a call to an unknown table {table}")
        }
    };
    let mut out = BTreeSet::new();
    for call in proxy.calls() {
        if call.action.starts_with("Transact") {
            for (kind, table) in &call.items {
                let action = if kind == "ConditionCheck" { "ConditionCheckItem".to_string() } else { format!("{kind}Item") };
                out.insert((format!("dynamodb:{action}"), format!("table/{}", logical(table))));
            }
            continue;
        }
        for (table, index) in &call.resources {
            let resource = match index {
                Some(i) => format!("table/{}/index/{i}", logical(table)),
                None => format!("table/{}", logical(table)),
            };
            out.insert((format!("dynamodb:{}", call.action), resource));
        }
    }
    out
}

/// A policy resource as `table/...` (None for other services).
fn table_resource(arn: &str) -> Option<String> {
    arn.split_once(":table/").map(|(_, rest)| format!("table/{rest}"))
}

/// The template's resource: intrinsic functions resolved to the table names they stand for.
fn template_resource(v: &Value, params: &Value) -> Option<String> {
    if let Some(att) = v.get("Fn::GetAtt") {
        assert_eq!(att[1], "Arn");
        let name = match att[0].as_str()? {
            "CoachingConversationsTable" => "coaching-conversations",
            other => panic!("GetAtt of {other}"),
        };
        return Some(format!("table/{name}"));
    }
    let mut s = v.get("Fn::Sub").and_then(Value::as_str).or_else(|| v.as_str())?.to_string();
    s = s.replace("${CoachingConversationsTable.Arn}", "arn:aws:dynamodb:r:a:table/coaching-conversations");
    for (name, p) in params.as_object().into_iter().flatten() {
        if let Some(d) = p["Default"].as_str() {
            s = s.replace(&format!("${{{name}}}"), d);
        }
    }
    table_resource(&s)
}

fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => value.starts_with(head) && (0..=value.len() - head.len()).any(|i| glob(tail, &value[head.len() + i..])),
    }
}

/// Every (action, resource pattern) a policy's statements allow.
fn grants(statements: &[Value], resource: impl Fn(&Value) -> Option<String>) -> Vec<Permission> {
    let list = |v: &Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]) };
    let mut out = vec![];
    for st in statements.iter().filter(|s| s["Effect"] == "Allow") {
        for action in list(&st["Action"]).iter().filter_map(Value::as_str).filter(|a| a.starts_with("dynamodb:")) {
            for r in list(&st["Resource"]).iter().filter_map(&resource) {
                out.push((action.to_string(), r));
            }
        }
    }
    out
}

fn check(name: &str, grants: &[Permission], needed: &BTreeSet<Permission>) -> Vec<String> {
    let allows = |(ga, gr): &Permission, (na, nr): &Permission| glob(ga, na) && glob(gr, nr);
    let mut problems: Vec<String> = needed.iter().filter(|n| !grants.iter().any(|g| allows(g, n))).map(|(a, r)| format!("{name}: {a} on {r} is needed and not granted")).collect();
    for g in grants {
        if !needed.iter().any(|n| allows(g, n)) {
            problems.push(format!("{name}: {} on {} is granted and no call used it", g.0, g.1));
        }
    }
    problems
}

#[tokio::test]
async fn every_call_of_a_scripted_conversation_is_granted_and_nothing_more() {
    let proxy = DynamoProxy::start(&dynamodb_endpoint(), 7).await;
    let endpoint = proxy.endpoint.clone();
    let app = spawn_with(move |c| c.dynamodb_endpoint = Some(endpoint)).await;
    app.seed().await;
    proxy.clear(); // setting up tables and demo data is not the function's work
    let user = "demo-alice";
    let first = json!({ "message": "What should I work on today?", "clientMessageId": "iam-0001-abcd" });
    assert_eq!(app.chat_json(user, &first).await.0, 200);
    assert_eq!(app.chat_json(user, &first).await.0, 200, "the retry is answered from the stored turn");
    let swing = json!({ "message": "And this swing?", "swingId": "swing-alice-001" });
    assert_eq!(app.chat_json(user, &swing).await.0, 200);
    for path in ["/api/chat/coaching/conversation", "/api/chat/coaching/themes", "/api/chat/coaching/usage"] {
        assert_eq!(app.read(Method::GET, user, path).await.0, 200, "{path}");
    }
    assert_eq!(app.read(Method::DELETE, user, "/api/chat/coaching/me").await.0, 200);

    let needed = needed(&app, &proxy);
    println!("permissions the calls need: {needed:?}");
    let template: Value = serde_yaml::from_str(&std::fs::read_to_string("infra/lambda-deployment.yaml").unwrap()).unwrap();
    let statements = template["Resources"]["CoachFunction"]["Properties"]["Policies"][0]["Statement"].as_array().cloned().unwrap();
    let params = template["Parameters"].clone();
    let mut problems = check("lambda-deployment.yaml", &grants(&statements, |r| template_resource(r, &params)), &needed);
    let standalone: Value = serde_json::from_str(&std::fs::read_to_string("infra/iam-role-policy.json").unwrap()).unwrap();
    let statements = standalone["Statement"].as_array().cloned().unwrap();
    problems.extend(check("iam-role-policy.json", &grants(&statements, |r| r.as_str().and_then(table_resource)), &needed));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
