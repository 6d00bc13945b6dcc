//! Authentication: admin tokens (HS256 JWT with expiry), the constant-time admin password check,
//! the per-IP login rate limit, and the `Admin` extractor that guards admin routes.

use std::{
    collections::HashMap,
    future::{Ready, ready},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::errors::ApiError;

/// Login attempts allowed per client IP per window.
const LOGIN_ATTEMPTS_PER_WINDOW: u32 = 10;
/// The login rate-limit window.
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Tracked IPs before stale windows are swept, bounding memory under a spray of addresses.
const LOGIN_TRACKED_IPS: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
}

/// Issues and checks admin credentials and tokens.
pub struct AdminAuth {
    username: String,
    password_digest: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    limiter: LoginLimiter,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A freshly issued token.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    /// Always `true`: the original backend's login answer had it and its clients check it.
    pub success: bool,
    /// The JWT.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AdminAuth {
    /// Credentials and signing secret from the settings.
    pub fn new(
        username: &str,
        password: &SecretString,
        jwt_secret: &SecretString,
        ttl: Duration,
    ) -> Self {
        let secret = jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        AdminAuth {
            username: username.to_owned(),
            // Comparing fixed-size digests keeps the check constant-time whatever the lengths.
            password_digest: digest(password.expose_secret()),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            limiter: LoginLimiter::default(),
        }
    }

    /// Checks a login and issues a token.
    ///
    /// # Errors
    /// 429 when the client IP made too many attempts; 401 for wrong credentials.
    pub fn login(
        &self,
        client: Option<IpAddr>,
        username: &str,
        password: &str,
    ) -> Result<IssuedToken, ApiError> {
        if let Some(ip) = client
            && let Err(retry_in) = self.limiter.attempt(ip)
        {
            return Err(ApiError::new(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_login_attempts",
                "too many login attempts from this address; wait a minute and try again",
            )
            .with_retry_after(retry_in.as_secs().max(1)));
        }
        let user_ok = digest(username).ct_eq(&digest(&self.username));
        let password_ok = digest(password).ct_eq(&self.password_digest);
        if !bool::from(user_ok & password_ok) {
            return Err(ApiError::unauthorized("wrong username or password"));
        }
        let now = unix_now();
        let claims = Claims {
            sub: self.username.clone(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(
                |_| {
                    ApiError::new(
                        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "token could not be issued",
                    )
                },
            )?;
        Ok(IssuedToken {
            success: true,
            access_token,
            token_type: "bearer",
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Checks a bearer token.
    ///
    /// # Errors
    /// 401 when it is malformed, forged or expired.
    pub fn verify(&self, token: &str) -> Result<(), ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("the admin token has expired; log in again")
                }
                _ => ApiError::unauthorized("the admin token is invalid; log in again"),
            })?;
        if data.claims.sub != self.username {
            return Err(ApiError::unauthorized(
                "the admin token is invalid; log in again",
            ));
        }
        Ok(())
    }
}

/// Counts login attempts per client IP in fixed windows.
#[derive(Debug, Default)]
struct LoginLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    /// Records an attempt; `Err(time until the window resets)` when over the limit.
    fn attempt(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= LOGIN_TRACKED_IPS {
            windows.retain(|_, (start, _)| now.duration_since(*start) < LOGIN_WINDOW);
        }
        let (start, count) = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= LOGIN_WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > LOGIN_ATTEMPTS_PER_WINDOW {
            return Err(LOGIN_WINDOW.saturating_sub(now.duration_since(*start)));
        }
        Ok(())
    }
}

/// Proof that the request carries a valid admin token; add it as a handler argument.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check_admin(request))
    }
}

fn check_admin(request: &HttpRequest) -> Result<Admin, ApiError> {
    let Some(auth) = request.app_data::<web::Data<AdminAuth>>() else {
        return Err(ApiError::unauthorized(
            "admin authentication is not configured",
        ));
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(llm_adapters::bearer_token)
        .ok_or_else(|| {
            ApiError::unauthorized("send the admin token as Authorization: Bearer <token>")
        })?;
    auth.verify(token)?;
    Ok(Admin)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn auth(ttl: Duration) -> AdminAuth {
        AdminAuth::new(
            "admin",
            &SecretString::from("correct horse".to_owned()),
            &SecretString::from("0123456789abcdef0123456789abcdef".to_owned()),
            ttl,
        )
    }

    #[test]
    fn login_issues_a_token_that_verifies() {
        let auth = auth(Duration::from_secs(60));
        let token = auth.login(None, "admin", "correct horse").unwrap();
        assert_eq!(token.token_type, "bearer");
        assert_eq!(token.expires_in, 60);
        auth.verify(&token.access_token).unwrap();
    }

    #[test]
    fn wrong_credentials_are_refused() {
        let auth = auth(Duration::from_secs(60));
        assert_eq!(
            auth.login(None, "admin", "wrong").unwrap_err().status(),
            401
        );
        assert_eq!(
            auth.login(None, "root", "correct horse")
                .unwrap_err()
                .status(),
            401
        );
    }

    #[test]
    fn forged_and_expired_tokens_are_refused() {
        let auth = auth(Duration::from_secs(60));
        let other = AdminAuth::new(
            "admin",
            &SecretString::from("correct horse".to_owned()),
            &SecretString::from("another-secret-another-secret!!".to_owned()),
            Duration::from_secs(60),
        );
        let forged = other
            .login(None, "admin", "correct horse")
            .unwrap()
            .access_token;
        assert!(auth.verify(&forged).is_err());
        assert!(auth.verify("not.a.token").is_err());
        let claims = Claims {
            sub: "admin".into(),
            iat: 1,
            exp: 2,
        };
        let expired =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &auth.encoding).unwrap();
        assert!(
            auth.verify(&expired)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
    }

    #[test]
    fn login_is_rate_limited_per_ip() {
        let auth = auth(Duration::from_secs(60));
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..LOGIN_ATTEMPTS_PER_WINDOW {
            let _ = auth.login(Some(ip), "admin", "wrong");
        }
        let err = auth.login(Some(ip), "admin", "correct horse").unwrap_err();
        assert_eq!(err.status(), 429);
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        assert!(auth.login(Some(other), "admin", "correct horse").is_ok());
    }
}
