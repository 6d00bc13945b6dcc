//! Encryption of stored upstream key values (SPEC §9): the parsed `ENCRYPTION_KEY`
//! ([`EncryptionKey`]) and the [`KeyCipher`] derived from it. Pure code, no I/O.
//!
//! Three sub-keys come out of the one configured key through HKDF-SHA256, each under its own
//! label, so no two purposes share key material: the AES-256-GCM key that encrypts values, the
//! HMAC-SHA256 key of `key_hash` (duplicate detection without comparing values), and a short
//! public key identifier written into every encrypted value.
//!
//! An encrypted value reads `v1:<key id>:<base64(nonce || ciphertext || tag)>`: `v1` names this
//! format, the key id (8 hex digits) names the key that wrote it, so the store can tell plain
//! text, its own ciphertexts and another key's ciphertexts apart with one SQL comparison, and the
//! nonce is 96 fresh random bits from the operating system per value. The prefix is the
//! associated data of the encryption, so a value cannot be relabelled to another version or key.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The start of every encrypted value, whatever key wrote it.
pub const ENCRYPTED_PREFIX: &str = "v1:";
/// Length of `v1:<8 hex digits>:`, the prefix naming the format and the key.
pub const KEYED_PREFIX_LEN: usize = ENCRYPTED_PREFIX.len() + KEY_ID_HEX_LEN + 1;
const KEY_ID_HEX_LEN: usize = 8;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// A random 32-byte key shows about 30 distinct byte values; fewer than this many means a
/// pattern (all zeros, a repeated word), not randomness.
const MIN_DISTINCT_BYTES: usize = 16;
/// HKDF salt: fixed, so the same `ENCRYPTION_KEY` always gives the same sub-keys.
const HKDF_SALT: &[u8] = b"api-key-rotator key encryption";

/// How to make a good key, repeated in every error about one.
pub const GENERATE_HINT: &str = "generate one with `openssl rand -hex 32`";

/// The configured `ENCRYPTION_KEY`: 32 bytes, wiped from memory when dropped, never printed.
#[derive(Clone)]
pub struct EncryptionKey(Zeroizing<[u8; KEY_LEN]>);

/// Why a text is not a usable encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionKeyError {
    /// Not 64 hex or 44 base64 characters of 32 bytes.
    #[error(
        "must be 32 random bytes written as 64 hex or 44 base64 characters; generate one with `openssl rand -hex 32`"
    )]
    Malformed,
    /// 32 bytes, but a pattern rather than random ones.
    #[error(
        "is too weak: it repeats a pattern instead of being 32 random bytes; generate one with `openssl rand -hex 32`"
    )]
    Weak,
}

impl EncryptionKey {
    /// Reads 32 bytes written as 64 hex digits or 44 base64 characters (standard or URL-safe
    /// alphabet, padded), refusing patterned keys such as all zeros.
    ///
    /// # Errors
    /// [`EncryptionKeyError`] saying what is wrong and how to generate a key.
    pub fn parse(text: &str) -> Result<Self, EncryptionKeyError> {
        let text = text.trim();
        let bytes = Zeroizing::new(match text.len() {
            64 => hex::decode(text).map_err(|_| EncryptionKeyError::Malformed)?,
            44 => general_purpose::STANDARD
                .decode(text)
                .or_else(|_| general_purpose::URL_SAFE.decode(text))
                .map_err(|_| EncryptionKeyError::Malformed)?,
            _ => return Err(EncryptionKeyError::Malformed),
        });
        let mut key = Zeroizing::new([0_u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(EncryptionKeyError::Malformed);
        }
        key.copy_from_slice(&bytes);
        let mut seen = [false; 256];
        key.iter().for_each(|&b| seen[usize::from(b)] = true);
        if seen.iter().filter(|&&s| s).count() < MIN_DISTINCT_BYTES {
            return Err(EncryptionKeyError::Weak);
        }
        Ok(EncryptionKey(key))
    }
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

/// Why a stored value could not be turned back into a key value, or a value not encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The value is plain text, not a ciphertext.
    #[error("the value is not encrypted")]
    NotEncrypted,
    /// Encrypted by a key other than this cipher's.
    #[error("the value was encrypted with another encryption key")]
    OtherKey,
    /// Encrypted by this cipher's key, but altered or truncated since.
    #[error("the value is corrupt: it does not decrypt")]
    Corrupt,
    /// The operating system's random source failed, so no nonce could be drawn.
    #[error("no random nonce could be drawn from the operating system")]
    NoRandomness,
}

/// What a stored `key_value` is, read from its form alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredForm<'a> {
    /// A plain key value.
    Plain,
    /// A ciphertext written by the key with this identifier.
    Encrypted {
        /// The writer's key identifier (8 hex digits).
        key_id: &'a str,
    },
}

/// Tells plain text from ciphertexts by the prefix: `v1:`, eight characters (the key id), `:`,
/// then at least one character. The store's census counts with the same rule in SQL.
///
/// A plain key value that itself had that shape would be read as a ciphertext (and refused,
/// never sent upstream); no provider issues keys of that shape.
pub fn stored_form(stored: &str) -> StoredForm<'_> {
    let bytes = stored.as_bytes();
    let keyed = bytes.len() > KEYED_PREFIX_LEN
        && stored.starts_with(ENCRYPTED_PREFIX)
        && bytes[KEYED_PREFIX_LEN - 1] == b':'
        && stored.is_char_boundary(KEYED_PREFIX_LEN - 1);
    if keyed {
        StoredForm::Encrypted {
            key_id: &stored[ENCRYPTED_PREFIX.len()..KEYED_PREFIX_LEN - 1],
        }
    } else {
        StoredForm::Plain
    }
}

/// Hashes client-key secrets (SPEC §7) into the digest stored and looked up: HMAC-SHA256 under
/// its own sub-key of `ENCRYPTION_KEY` when one is set (HKDF info `akr v1 client key hash`, apart
/// from the three sub-keys of [`KeyCipher`]), plain SHA-256 otherwise. The keyed MAC is set up
/// once and cloned per secret, so hashing on the hot path costs two SHA-256 compressions.
///
/// A new `ENCRYPTION_KEY` changes every digest: client keys must then be rotated.
#[derive(Clone)]
pub struct ClientSecretHasher {
    keyed: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for ClientSecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecretHasher")
            .field("keyed", &self.keyed.is_some())
            .finish()
    }
}

impl ClientSecretHasher {
    /// Plain SHA-256 (no `ENCRYPTION_KEY`).
    pub fn plain() -> Self {
        ClientSecretHasher { keyed: None }
    }

    /// HMAC-SHA256 under the client-key sub-key of `key`.
    pub fn keyed(key: &EncryptionKey) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), key.0.as_slice());
        let mut sub_key = Zeroizing::new([0_u8; KEY_LEN]);
        if hkdf
            .expand(b"akr v1 client key hash", sub_key.as_mut_slice())
            .is_err()
        {
            unreachable!("HKDF-SHA256 expands up to 8160 bytes; this output is 32");
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(sub_key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        ClientSecretHasher { keyed: Some(mac) }
    }

    /// The digest of `secret`.
    pub fn digest(&self, secret: &str) -> domain::SecretDigest {
        let bytes: [u8; 32] = match &self.keyed {
            Some(mac) => {
                let mut mac = mac.clone();
                mac.update(secret.as_bytes());
                mac.finalize().into_bytes().into()
            }
            None => {
                use sha2::Digest;
                Sha256::digest(secret.as_bytes()).into()
            }
        };
        domain::SecretDigest(bytes)
    }
}

/// Encrypts and decrypts key values and computes their keyed fingerprint, with the sub-keys
/// derived from one [`EncryptionKey`]. Cloning copies the sub-keys; each copy wipes its own.
#[derive(Clone)]
pub struct KeyCipher {
    aead: Aes256Gcm,
    hash_key: Zeroizing<[u8; KEY_LEN]>,
    /// `v1:<key id>:`, the prefix and associated data of this key's ciphertexts.
    prefix: String,
}

impl KeyCipher {
    /// Derives the encryption, hash and identifier sub-keys of `key`.
    pub fn new(key: &EncryptionKey) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), key.0.as_slice());
        let mut encryption_key = Zeroizing::new([0_u8; KEY_LEN]);
        let mut hash_key = Zeroizing::new([0_u8; KEY_LEN]);
        let mut key_id = [0_u8; KEY_ID_HEX_LEN / 2];
        let expanded = [
            hkdf.expand(b"akr v1 value encryption", encryption_key.as_mut_slice()),
            hkdf.expand(b"akr v1 key hash", hash_key.as_mut_slice()),
            hkdf.expand(b"akr v1 key identifier", &mut key_id),
        ];
        if expanded.iter().any(Result::is_err) {
            unreachable!("HKDF-SHA256 expands up to 8160 bytes; these outputs are 32 or 4");
        }
        let aead = Aes256Gcm::new(encryption_key.as_slice().into());
        KeyCipher {
            aead,
            hash_key,
            prefix: format!("{ENCRYPTED_PREFIX}{}:", hex::encode(key_id)),
        }
    }

    /// The public identifier of this key (8 hex digits), written into its ciphertexts.
    pub fn key_id(&self) -> &str {
        &self.prefix[ENCRYPTED_PREFIX.len()..self.prefix.len() - 1]
    }

    /// `v1:<key id>:`, the exact start of every value this cipher encrypts.
    pub fn value_prefix(&self) -> &str {
        &self.prefix
    }

    /// Encrypts a key value under a fresh random nonce.
    ///
    /// # Errors
    /// [`CipherError::NoRandomness`] when the operating system gives no random bytes.
    pub fn encrypt(&self, plain: &str) -> Result<String, CipherError> {
        let mut nonce = [0_u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CipherError::NoRandomness)?;
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: self.prefix.as_bytes(),
        };
        // Encryption fails only for messages beyond 64 GiB; key values are at most 4 KiB.
        let sealed = self
            .aead
            .encrypt(&Nonce::from(nonce), payload)
            .map_err(|_| CipherError::Corrupt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{}{}",
            self.prefix,
            general_purpose::STANDARD_NO_PAD.encode(blob)
        ))
    }

    /// Decrypts a value this cipher encrypted; the plain text is wiped when dropped.
    ///
    /// # Errors
    /// [`CipherError::NotEncrypted`] for plain text, [`CipherError::OtherKey`] for another
    /// key's ciphertext, [`CipherError::Corrupt`] when it does not authenticate.
    pub fn decrypt(&self, stored: &str) -> Result<Zeroizing<String>, CipherError> {
        match stored_form(stored) {
            StoredForm::Plain => return Err(CipherError::NotEncrypted),
            StoredForm::Encrypted { key_id } if key_id != self.key_id() => {
                return Err(CipherError::OtherKey);
            }
            StoredForm::Encrypted { .. } => {}
        }
        let blob = general_purpose::STANDARD_NO_PAD
            .decode(&stored[self.prefix.len()..])
            .map_err(|_| CipherError::Corrupt)?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(CipherError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| CipherError::Corrupt)?;
        let payload = Payload {
            msg: sealed,
            aad: self.prefix.as_bytes(),
        };
        let plain = Zeroizing::new(
            self.aead
                .decrypt(&Nonce::from(nonce), payload)
                .map_err(|_| CipherError::Corrupt)?,
        );
        std::str::from_utf8(&plain)
            .map(|text| Zeroizing::new(text.to_owned()))
            .map_err(|_| CipherError::Corrupt)
    }

    /// The keyed fingerprint stored in `key_hash`: lower-case hex HMAC-SHA256 of the value
    /// under the hash sub-key, so a dump cannot be matched against a list of known keys.
    pub fn fingerprint(&self, plain: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.hash_key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(plain.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Most bytes the encrypted form of a `plain_len`-byte value takes.
    pub fn encrypted_len(plain_len: usize) -> usize {
        KEYED_PREFIX_LEN + (NONCE_LEN + plain_len + TAG_LEN).div_ceil(3) * 4
    }
}

impl PartialEq for KeyCipher {
    /// Two ciphers are equal when they come from the same key (same derived sub-keys).
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.prefix == other.prefix && bool::from(self.hash_key.ct_eq(other.hash_key.as_slice()))
    }
}

impl Eq for KeyCipher {}

impl std::fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCipher")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sha2::Digest;

    use super::*;

    const HEX_KEY: &str = "3f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2";

    fn cipher() -> KeyCipher {
        KeyCipher::new(&EncryptionKey::parse(HEX_KEY).unwrap())
    }

    #[test]
    fn hex_and_base64_keys_of_32_bytes_are_accepted_and_agree() {
        let bytes = hex::decode(HEX_KEY).unwrap();
        let base64 = general_purpose::STANDARD.encode(&bytes);
        assert_eq!(base64.len(), 44);
        let from_hex = KeyCipher::new(&EncryptionKey::parse(HEX_KEY).unwrap());
        let from_base64 = KeyCipher::new(&EncryptionKey::parse(&base64).unwrap());
        assert_eq!(from_hex, from_base64);
        assert!(EncryptionKey::parse(&format!("  {HEX_KEY}\n")).is_ok());
    }

    #[test]
    fn malformed_and_patterned_keys_are_refused_with_the_way_to_make_one() {
        for text in [
            "",
            "secret",
            &HEX_KEY[..62],
            &format!("{}zz", &HEX_KEY[..62]),
            "c2hvcnQ=",
            // 44 base64 characters without padding decode to 33 bytes.
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let err = EncryptionKey::parse(text).unwrap_err();
            assert_eq!(err, EncryptionKeyError::Malformed, "{text:?}");
            assert!(err.to_string().contains("openssl rand -hex 32"));
        }
        for weak in ["00".repeat(32), "0123456789abcdef".repeat(4)] {
            let err = EncryptionKey::parse(&weak).unwrap_err();
            assert_eq!(err, EncryptionKeyError::Weak, "{weak}");
            assert!(err.to_string().contains("openssl rand -hex 32"));
        }
    }

    #[test]
    fn values_round_trip_with_a_fresh_nonce_each_time() {
        let cipher = cipher();
        let first = cipher.encrypt("sk-live-0123456789").unwrap();
        let second = cipher.encrypt("sk-live-0123456789").unwrap();
        assert_ne!(first, second, "a fresh nonce per value");
        assert!(first.starts_with(cipher.value_prefix()));
        assert!(!first.contains("sk-live"));
        assert_eq!(
            cipher.decrypt(&first).unwrap().as_str(),
            "sk-live-0123456789"
        );
        assert_eq!(
            cipher.decrypt(&second).unwrap().as_str(),
            "sk-live-0123456789"
        );
        assert!(first.len() <= KeyCipher::encrypted_len("sk-live-0123456789".len()));
    }

    #[test]
    fn the_stored_form_tells_plain_text_from_each_keys_ciphertexts() {
        let cipher = cipher();
        let sealed = cipher.encrypt("abc").unwrap();
        assert_eq!(
            stored_form(&sealed),
            StoredForm::Encrypted {
                key_id: cipher.key_id()
            }
        );
        for plain in [
            "sk-abc",
            "v1:abc",
            "v1:0011aabbX...",
            "V1:0011aabb:xyz",
            "v1:0011aabb:",
        ] {
            assert_eq!(stored_form(plain), StoredForm::Plain, "{plain}");
        }
        assert_eq!(cipher.decrypt("sk-abc"), Err(CipherError::NotEncrypted));
    }

    #[test]
    fn another_keys_or_a_tampered_ciphertext_is_refused() {
        let cipher = cipher();
        let other = KeyCipher::new(&EncryptionKey::parse(&HEX_KEY.replace('3', "4")).unwrap());
        assert_ne!(cipher.key_id(), other.key_id());
        let sealed = other.encrypt("sk-other").unwrap();
        assert_eq!(cipher.decrypt(&sealed), Err(CipherError::OtherKey));

        let sealed = cipher.encrypt("sk-mine").unwrap();
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(cipher.decrypt(&tampered), Err(CipherError::Corrupt));
        // Relabelling another key's ciphertext with this key's id does not make it readable.
        let relabelled = format!(
            "{}{}",
            cipher.value_prefix(),
            &other.encrypt("sk-other").unwrap()[KEYED_PREFIX_LEN..]
        );
        assert_eq!(cipher.decrypt(&relabelled), Err(CipherError::Corrupt));
    }

    #[test]
    fn the_fingerprint_is_keyed_and_is_not_the_plain_hash() {
        let cipher = cipher();
        let other = KeyCipher::new(&EncryptionKey::parse(&HEX_KEY.replace('3', "4")).unwrap());
        let value = "sk-live-0123456789";
        let keyed = cipher.fingerprint(value);
        assert_eq!(keyed.len(), 64);
        assert_eq!(
            keyed,
            cipher.fingerprint(value),
            "deterministic, so duplicates match"
        );
        assert_ne!(keyed, other.fingerprint(value));
        assert_ne!(keyed, hex::encode(Sha256::digest(value.as_bytes())));
    }

    #[test]
    fn debug_output_names_the_key_id_only() {
        let key = EncryptionKey::parse(HEX_KEY).unwrap();
        assert!(!format!("{key:?}").contains(&HEX_KEY[..8]));
        let cipher = KeyCipher::new(&key);
        let debug = format!("{cipher:?}");
        assert!(debug.contains(cipher.key_id()) && !debug.contains(&HEX_KEY[..8]));
    }

    #[test]
    fn client_secrets_hash_plain_or_keyed_apart_from_key_fingerprints() {
        let plain = ClientSecretHasher::plain().digest("akr-secret");
        let key = EncryptionKey::parse(HEX_KEY).unwrap();
        let keyed = ClientSecretHasher::keyed(&key).digest("akr-secret");
        assert_ne!(plain, keyed);
        assert_eq!(keyed, ClientSecretHasher::keyed(&key).digest("akr-secret"));
        assert_ne!(
            keyed.to_hex(),
            KeyCipher::new(&key).fingerprint("akr-secret")
        );
    }
}
