//! A database as the original Go backend left it (SPEC §11), shared by the import tests of the
//! SQLite and MySQL adapters and of the server (`#[path]`-included): GORM's schema for each
//! backend, column for column, and rows that exercise every rule of the import: both config
//! types, lower-case `config_type`, NULL `api_format`/`output_format`, an inactive config and
//! key, a slug with a dot and upper case, an LLM config whose key header is `Authorization`,
//! a blank `api_key_name` on an LLM config, a duplicate and a blank key, and a config the new
//! validation refuses (with a key that goes with it).

/// GORM's `AutoMigrate` of the original models on SQLite.
const SQLITE_SCHEMA: [&str; 5] = [
    "CREATE TABLE `proxy_configs` (`id` integer PRIMARY KEY AUTOINCREMENT,`name` text NOT NULL,\
     `slug` text NOT NULL,`config_type` text NOT NULL,`api_key_location` text,\
     `api_key_name` text,`is_active` numeric DEFAULT true,`created_at` datetime,\
     `updated_at` datetime,`method` text,`target_url` text,`target_base_url` text,\
     `api_format` text DEFAULT \"openai_compatible\",`output_format` text)",
    "CREATE UNIQUE INDEX `idx_proxy_configs_slug` ON `proxy_configs`(`slug`)",
    "CREATE UNIQUE INDEX `idx_proxy_configs_name` ON `proxy_configs`(`name`)",
    "CREATE INDEX `idx_proxy_configs_config_type` ON `proxy_configs`(`config_type`)",
    "CREATE TABLE `api_keys` (`id` integer PRIMARY KEY AUTOINCREMENT,`key_value` text NOT NULL,\
     `is_active` numeric DEFAULT true,`proxy_config_id` integer,\
     CONSTRAINT `fk_proxy_configs_api_keys` FOREIGN KEY (`proxy_config_id`) \
     REFERENCES `proxy_configs`(`id`) ON DELETE CASCADE)",
];

/// GORM's `AutoMigrate` of the original models on MySQL.
const MYSQL_SCHEMA: [&str; 2] = [
    "CREATE TABLE `proxy_configs` (`id` int AUTO_INCREMENT,`name` varchar(100) NOT NULL,\
     `slug` varchar(100) NOT NULL,`config_type` varchar(50) NOT NULL,\
     `api_key_location` varchar(50),`api_key_name` varchar(100),\
     `is_active` boolean DEFAULT true,`created_at` datetime(3) NULL,\
     `updated_at` datetime(3) NULL,`method` varchar(10),`target_url` varchar(255),\
     `target_base_url` varchar(255),`api_format` varchar(50) DEFAULT 'openai_compatible',\
     `output_format` varchar(50),PRIMARY KEY (`id`),\
     UNIQUE INDEX `idx_proxy_configs_name` (`name`),UNIQUE INDEX `idx_proxy_configs_slug` (`slug`),\
     INDEX `idx_proxy_configs_config_type` (`config_type`))",
    "CREATE TABLE `api_keys` (`id` int AUTO_INCREMENT,`key_value` varchar(255) NOT NULL,\
     `is_active` boolean DEFAULT true,`proxy_config_id` int,PRIMARY KEY (`id`),\
     CONSTRAINT `fk_proxy_configs_api_keys` FOREIGN KEY (`proxy_config_id`) \
     REFERENCES `proxy_configs`(`id`) ON DELETE CASCADE)",
];

/// Which engine the statements are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code, reason = "each test binary uses the engine it tests")]
pub enum Engine {
    Sqlite,
    Mysql,
}

/// The schema and rows; `upstream` is the base URL the configs point at.
pub fn statements(engine: Engine, upstream: &str) -> Vec<String> {
    let (schema, at, yes, no): (&[&str], &str, &str, &str) = match engine {
        Engine::Sqlite => (
            &SQLITE_SCHEMA,
            "2025-03-01 10:00:00.123456789+08:00",
            "1",
            "0",
        ),
        Engine::Mysql => (&MYSQL_SCHEMA, "2025-03-01 02:00:00.123", "true", "false"),
    };
    let config = |id: u32, rest: &str| {
        format!(
            "INSERT INTO proxy_configs (id, name, slug, config_type, api_key_location, \
             api_key_name, is_active, created_at, updated_at, method, target_url, \
             target_base_url, api_format, output_format) VALUES ({id}, {rest})"
        )
        .replace("{at}", &format!("'{at}'"))
        .replace("{yes}", yes)
        .replace("{no}", no)
        .replace("{upstream}", upstream)
    };
    let key = |id: u32, value: &str, active: &str, config: u32| {
        let active = if active == "yes" { yes } else { no };
        format!(
            "INSERT INTO api_keys (id, key_value, is_active, proxy_config_id) \
             VALUES ({id}, '{value}', {active}, {config})"
        )
    };
    let mut all: Vec<String> = schema.iter().map(|s| (*s).to_owned()).collect();
    all.extend([
        // The original console's LLM form: location header, empty name, formats unset.
        config(1, "'OpenAI', 'My.OpenAI', 'llm', 'header', '', {yes}, {at}, {at}, NULL, NULL, '{upstream}/v1', NULL, NULL"),
        config(2, "'Weather', 'weather', 'generic', 'query', 'apikey', {yes}, {at}, {at}, 'GET', '{upstream}/weather', NULL, NULL, NULL"),
        config(3, "'Retired', 'retired', 'llm', 'header', 'x-api-key', {no}, {at}, {at}, NULL, NULL, '{upstream}', 'anthropic_native', 'none'"),
        config(4, "'Broken', 'has space', 'generic', 'header', 'X-Key', {yes}, {at}, {at}, 'GET', 'not a url', NULL, NULL, NULL"),
        // An OpenAI-format config keyed in `Authorization`: the original sent `Bearer <key>`.
        config(5, "'Compat', 'compat', 'llm', 'header', 'Authorization', {yes}, {at}, {at}, NULL, NULL, '{upstream}/v1', 'openai_compatible', NULL"),
        key(1, "sk-openai-one", "yes", 1),
        key(2, "sk-openai-one", "yes", 1),
        key(3, "   ", "yes", 1),
        key(4, "sk-openai-two", "yes", 1),
        key(5, "weather-key", "yes", 2),
        key(6, "retired-key", "no", 3),
        key(7, "broken-key", "yes", 4),
        key(8, "compat-key", "yes", 5),
    ]);
    all
}

/// Configs imported from these rows: 1, 2, 3 and 5.
pub const IMPORTED_CONFIGS: u64 = 4;
/// Keys imported: 1, 4, 5, 6 and 8.
pub const IMPORTED_KEYS: u64 = 5;
/// Refused rows, in the report's order: config 4, then keys 2 (duplicate), 3 (blank) and 7
/// (its config was refused).
pub const REFUSED: [(&str, i64); 4] = [
    ("proxy_configs", 4),
    ("api_keys", 2),
    ("api_keys", 3),
    ("api_keys", 7),
];
