//! A small blocking HTTP client (ureq, plain HTTP on loopback only) for the admin API, the
//! mock's counters, the server's `/metrics` and the time-to-first-byte probe of streamed
//! answers.

use std::{
    io::Read,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde_json::Value;

use super::STREAM_BODY;

/// A small blocking HTTP client for the admin API, the mock's counters and the
/// time-to-first-byte probe.
pub(super) struct Http {
    agent: ureq::Agent,
}

impl Http {
    pub(super) fn new() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Http { agent }
    }

    pub(super) fn get(&self, url: &str) -> anyhow::Result<(u16, String)> {
        let mut response = self.agent.get(url).call()?;
        let body = response.body_mut().read_to_string()?;
        Ok((response.status().as_u16(), body))
    }

    /// A `GET` with `Authorization: Bearer <bearer>`.
    pub(super) fn get_authorized(&self, url: &str, bearer: &str) -> anyhow::Result<(u16, String)> {
        let mut response = self
            .agent
            .get(url)
            .header("authorization", &format!("Bearer {bearer}"))
            .call()?;
        let body = response.body_mut().read_to_string()?;
        Ok((response.status().as_u16(), body))
    }

    pub(super) fn post_json(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(u16, String)> {
        let mut request = self
            .agent
            .post(url)
            .header("content-type", "application/json");
        if let Some(token) = bearer {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let mut response = request.send(body.to_string().as_str())?;
        let text = response.body_mut().read_to_string()?;
        Ok((response.status().as_u16(), text))
    }

    pub(super) fn delete(&self, url: &str, bearer: &str) -> anyhow::Result<()> {
        let response = self
            .agent
            .delete(url)
            .header("authorization", &format!("Bearer {bearer}"))
            .call()?;
        if !response.status().is_success() {
            bail!("DELETE {url} answered {}", response.status());
        }
        Ok(())
    }

    /// One streamed request: (time to the first body byte, time to the end).
    pub(super) fn time_stream(
        &self,
        url: &str,
        bearer: &str,
    ) -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let response = self
            .agent
            .post(url)
            .header("content-type", "application/json")
            .header("authorization", &format!("Bearer {bearer}"))
            .send(STREAM_BODY)?;
        if response.status() != 200 {
            bail!("streamed request to {url} answered {}", response.status());
        }
        let mut reader = response.into_body().into_reader();
        let mut buffer = [0_u8; 8192];
        let mut first = None;
        let mut text = Vec::new();
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            first.get_or_insert_with(|| started.elapsed());
            text.extend_from_slice(&buffer[..read]);
        }
        let total = started.elapsed();
        if !text.ends_with(b"data: [DONE]\n\n") {
            bail!(
                "the stream from {url} did not end with [DONE]: {}",
                String::from_utf8_lossy(&text)
            );
        }
        Ok((first.unwrap_or(total), total))
    }
}
