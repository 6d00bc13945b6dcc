//! End to end with the official `openai` Python package, unmodified, `base_url` pointed at the
//! proxy. `.ci/run` installs it into a virtual environment and sets `OPENAI_SDK_PYTHON`.

use serde_json::{Value, json};

use crate::helpers::{Behavior, MockUpstream, PROXY_KEY, spawn_app};

const SCRIPT: &str = r#"
import os, openai
client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ["API_KEY"], max_retries=0)
plain = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
assert plain.choices[0].message.content == "Hello", plain
streamed = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed)
assert text == "Hello", text
models = [m.id for m in client.models.list()]
assert models == ["gpt-4o-mini"], models
try:
    openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="wrong", max_retries=0).models.list()
    raise SystemExit("a wrong proxy key was accepted")
except openai.AuthenticationError:
    pass
print("openai sdk ok")
"#;

/// Chat, streaming and tool calls through a converting config (the upstream speaks another format).
const CONVERTED_SCRIPT: &str = r#"
import os, json, openai
client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ["API_KEY"], max_retries=0)
messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
plain = client.chat.completions.create(model="m-1", messages=messages, max_tokens=50)
assert plain.choices[0].message.content == "Hello", plain
assert plain.choices[0].finish_reason == "stop", plain
streamed = client.chat.completions.create(model="m-1", messages=messages, stream=True)
text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
assert text == "Hello", text
tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
called = client.chat.completions.create(model="m-1", messages=messages, tools=tools)
call = called.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}, called
assert called.choices[0].finish_reason == "tool_calls", called
name, arguments = None, ""
for chunk in client.chat.completions.create(model="m-1", messages=messages, tools=tools, stream=True):
    for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        name = delta.function.name or name
        arguments += delta.function.arguments or ""
assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}, (name, arguments)
print("converted sdk ok")
"#;

async fn run_python(
    python: std::ffi::OsString,
    script: &'static str,
    base_url: String,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script])
            .env("BASE_URL", base_url)
            .env("API_KEY", PROXY_KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_openai_sdk_talks_to_anthropic_and_gemini_upstreams_through_conversion() {
    let Some(python) = std::env::var_os("OPENAI_SDK_PYTHON") else {
        eprintln!(
            "skipped: OPENAI_SDK_PYTHON unset (.ci/run points it at a venv with the openai package)"
        );
        return;
    };
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("sk-ant", Behavior::AnthropicApi);
    mock.on("AIza-gem", Behavior::GeminiApi);
    for (slug, format, key) in [
        ("to-claude", "anthropic_native", "sk-ant"),
        ("to-gemini", "gemini_native", "AIza-gem"),
    ] {
        let response = app
            .create_config(&json!({"name": slug, "slug": slug, "config_type": "LLM", "target_base_url": mock.base,
                "api_format": format, "output_format": "openai"}))
            .await;
        assert_eq!(response.status(), 201);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap();
        app.add_keys(id, &[key]).await;
        let output = run_python(
            python.clone(),
            CONVERTED_SCRIPT,
            app.url(&format!("/llm/{slug}/v1")),
        )
        .await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{slug}: stdout: {stdout}\nstderr: {stderr}"
        );
    }
    let paths: Vec<String> = mock.received().iter().map(|r| r.path.clone()).collect();
    assert!(paths.iter().any(|p| p == "/v1/messages"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.ends_with(":streamGenerateContent")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with(":generateContent")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_unmodified() {
    let Some(python) = std::env::var_os("OPENAI_SDK_PYTHON") else {
        eprintln!(
            "skipped: OPENAI_SDK_PYTHON unset (.ci/run points it at a venv with the openai package)"
        );
        return;
    };
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("sk-upstream", Behavior::OpenAiApi);
    let response = app
        .create_config(&json!({"name": "sdk", "slug": "sdk", "config_type": "LLM", "target_base_url": format!("{}/v1", mock.base)}))
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &["sk-upstream"]).await;
    let output = run_python(python, SCRIPT, app.url("/llm/sdk/v1")).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("openai sdk ok"));
    assert!(mock.received().iter().all(|r| r.key == "sk-upstream"));
}
