//! Loop protection: every request the proxies send upstream carries this deployment's hop
//! marker in `Via`, and a request that arrives with the marker already came through this
//! gateway (a config pointed at the gateway itself, or at another instance of the fleet) and is
//! refused with 508 instead of being sent round again until the process runs out of sockets.

use actix_web::http::{
    StatusCode,
    header::{self, HeaderMap, HeaderValue},
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::{config::Settings, errors::ApiError};

/// This deployment's entry in `Via`.
#[derive(Debug, Clone)]
pub struct HopMarker {
    /// `akr-<16 hex digits>`: the same on every instance that shares `JWT_SECRET`, so a loop
    /// through the load balancer is caught too; a hash, so it tells nothing about the secret.
    pseudonym: String,
    via_entry: HeaderValue,
}

impl HopMarker {
    /// The marker of the deployment these settings belong to.
    pub fn new(settings: &Settings) -> Self {
        let digest = Sha256::new()
            .chain_update(b"api-key-rotator hop marker\0")
            .chain_update(settings.jwt_secret.expose_secret().as_bytes())
            .finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let pseudonym = format!("akr-{hex}");
        let via_entry = HeaderValue::try_from(format!("1.1 {pseudonym}"))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 akr"));
        HopMarker {
            pseudonym,
            via_entry,
        }
    }

    /// Refuses a request that already went through this deployment.
    ///
    /// # Errors
    /// 508 `loop_detected` when a `Via` entry is this deployment's.
    pub fn check(&self, incoming: &HeaderMap) -> Result<(), ApiError> {
        let looped = incoming
            .get_all(header::VIA)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|entry| entry.split_whitespace().nth(1) == Some(self.pseudonym.as_str()));
        if looped {
            return Err(ApiError::new(
                StatusCode::LOOP_DETECTED,
                "loop_detected",
                "this request already passed through this gateway: a proxy config points at the gateway itself; fix its target URL",
            ));
        }
        Ok(())
    }

    /// Adds this deployment's entry to the `Via` of a request going upstream (one comma-separated
    /// field, as proxies conventionally extend it).
    pub fn stamp(&self, outgoing: &mut HeaderMap) {
        let earlier: Vec<&str> = outgoing
            .get_all(header::VIA)
            .filter_map(|value| value.to_str().ok())
            .collect();
        let value = if earlier.is_empty() {
            self.via_entry.clone()
        } else {
            let joined = format!("{}, 1.1 {}", earlier.join(", "), self.pseudonym);
            HeaderValue::try_from(joined).unwrap_or_else(|_| self.via_entry.clone())
        };
        outgoing.insert(header::VIA, value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn marker(secret: &str) -> HopMarker {
        let mut values = std::collections::BTreeMap::new();
        values.insert("JWT_SECRET".to_owned(), secret.to_owned());
        for (name, default) in crate::config::VARIABLES {
            if let Some(default) = default {
                values
                    .entry((*name).to_owned())
                    .or_insert_with(|| (*default).to_owned());
            }
        }
        HopMarker::new(&Settings::from_raw(&values).unwrap())
    }

    #[test]
    fn a_stamped_request_is_refused_by_the_same_deployment_only() {
        let ours = marker("one-deployment-secret-0123456789");
        let theirs = marker("another-deployment-secret-012345");
        let mut headers = HeaderMap::new();
        headers.append(header::VIA, HeaderValue::from_static("1.1 edge-proxy"));
        assert!(ours.check(&headers).is_ok());
        theirs.stamp(&mut headers);
        assert!(ours.check(&headers).is_ok(), "another gateway in the chain");
        ours.stamp(&mut headers);
        let error = ours.check(&headers).unwrap_err();
        assert_eq!(error.status(), StatusCode::LOOP_DETECTED);
        assert_eq!(error.code(), "loop_detected");
    }

    #[test]
    fn entries_in_one_comma_separated_via_are_each_checked() {
        let ours = marker("one-deployment-secret-0123456789");
        let mut stamped = HeaderMap::new();
        ours.stamp(&mut stamped);
        let entry = stamped
            .get(header::VIA)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::VIA,
            HeaderValue::try_from(format!("1.0 fred, {entry}, 1.1 nginx")).unwrap(),
        );
        assert!(ours.check(&headers).is_err());
        assert!(!entry.contains("one-deployment"), "the secret stays secret");
    }
}
