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
    let base_url = app.url("/llm/sdk/v1");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", SCRIPT])
            .env("BASE_URL", base_url)
            .env("API_KEY", PROXY_KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("openai sdk ok"));
    assert!(mock.received().iter().all(|r| r.key == "sk-upstream"));
}
