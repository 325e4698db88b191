//! `/openapi.json` is an OpenAPI 3.1 document that lists every path of the
//! JSON API in the contract (docs/API.md).

use serde_json::Value;

use crate::helpers::*;

/// `(method, path)` of every JSON endpoint the contract names: phone pages
/// (`/m/…`) and WeChat's callbacks (`/wechat/…`) are HTML or XML.
fn contract_paths() -> Vec<(String, String)> {
    let contract = include_str!("../../docs/API.md");
    let mut found = Vec::new();
    for line in contract.lines() {
        for method in ["GET", "POST"] {
            let mut rest = line;
            while let Some(at) = rest.find(&format!("`{method} /")) {
                let tail = &rest[at + method.len() + 2..];
                let end = tail.find(['`', ' ', '?']).unwrap_or(tail.len());
                let path = tail[..end].replace("{t}", "{ticket}");
                rest = &tail[end..];
                if !(path.starts_with("/m/") || path.starts_with("/wechat/")) {
                    found.push((method.to_lowercase(), path));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn openapi_lists_every_json_path_of_the_contract() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = contract_paths();
    assert!(expected.len() >= 10, "the contract was read: {expected:?}");
    for (method, path) in expected {
        assert!(
            doc["paths"][&path][&method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
    }
}
