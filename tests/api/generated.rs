//! The committed API Gateway model and OpenAPI document are what build.rs produces from
//! schema/. EXPECTORATE=overwrite rewrites them.

#[test]
fn committed_api_gateway_model_is_fresh() {
    expectorate::assert_contents("infra/generated/apigw-chat-request-model.json", coach_api::schemas::APIGW_REQUEST_MODEL);
}

#[test]
fn committed_openapi_document_is_fresh() {
    expectorate::assert_contents("infra/generated/openapi.json", coach_api::schemas::OPENAPI);
}

#[test]
fn the_api_gateway_model_is_draft_04_and_self_contained() {
    let model: serde_json::Value = serde_json::from_str(coach_api::schemas::APIGW_REQUEST_MODEL).unwrap_or_default();
    assert_eq!(model["$schema"], "http://json-schema.org/draft-04/schema#");
    assert!(!coach_api::schemas::APIGW_REQUEST_MODEL.contains("$ref"), "API Gateway gets no refs to resolve");
    assert_eq!(model["properties"]["message"]["maxLength"], 1000);
    assert_eq!(model["additionalProperties"], false);
}
