//! Policy specs (`--policy`) and skip configs (`--skip-config`): parse, validate, print back
//! and build a policy, or a clean error.

use ffnskip::profile::SkipConfig;
use ffnskip::skip::PolicySpec;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = text.parse::<PolicySpec>() {
        // The canonical string parses back, to the same canonical string.
        let again: PolicySpec = spec.to_string().parse().expect("a canonical spec parses");
        assert_eq!(again.to_string(), spec.to_string());
        if spec.validate().is_ok() {
            let _ = spec.build(4, None);
        }
    }
    if let Ok(config) = SkipConfig::from_json(text) {
        if let Ok(spec) = config.spec() {
            let _ = spec.build(config.calibration.mean_ffn_cosine.len().min(64), Some(&config.calibration));
        }
    }
}
