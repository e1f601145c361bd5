//! `ffnskip profile` and `ffnskip calibrate` on the default model and WikiText-2, kept short
//! (a few hundred decoded tokens in windows of 128).

use serde_json::Value;

use crate::common::{assert_clean_failure, ffnskip, stderr, stdout};

const TEXT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/text/wikitext2-valid.tokens.txt");

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn profile_writes_json_csv_and_figure_with_the_saturation_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p");
    let args = ["profile", "--text", TEXT, "--tokens", "240", "--window", "128", "--prefill", "32"];
    let run = ffnskip(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(run.status.success(), "{}", stderr(&run));

    let json = read_json(&out.join("profile.json"));
    assert_eq!(json["tokens"], 240);
    assert_eq!((json["window"].as_u64(), json["prefill"].as_u64(), json["windows"].as_u64()), (Some(128), Some(32), Some(3)));
    assert!(json["command"].as_str().unwrap().starts_with("ffnskip profile --text"), "{}", json["command"]);
    assert!(json["model"].as_str().unwrap().ends_with(".gguf"));
    assert_eq!(json["text"], TEXT);
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["layer"], i);
        for signal in ["cosine", "norm_ratio"] {
            let s = &l[signal];
            assert!(f(&s["p10"]) <= f(&s["p50"]) && f(&s["p50"]) <= f(&s["p90"]), "layer {i} {signal}: {s}");
        }
        let shares: Vec<f64> = l["cosine_share_above"].as_array().unwrap().iter().map(f).collect();
        assert_eq!(shares.len(), 3);
        assert!(shares[0] >= shares[1] && shares[1] >= shares[2] && shares[0] <= 1.0, "layer {i}: {shares:?}");
        // Positions 32–63 and 64–127 of each window: 32 + 64 + 32, 0 + 64 + 0, ... = 96 + 144.
        let buckets = l["cosine_by_position"].as_array().unwrap();
        let bounds: Vec<(u64, u64, u64)> = buckets
            .iter()
            .map(|b| (b["from"].as_u64().unwrap(), b["to"].as_u64().unwrap(), b["tokens"].as_u64().unwrap()))
            .collect();
        assert_eq!(bounds, vec![(32, 63, 96), (64, 127, 144)], "layer {i}");
    }
    let mean = |l: usize| f(&layers[l]["cosine"]["mean"]);
    // DESIGN §1: the first layer's FFN turns the stream, the middle ones barely, the last again.
    assert!(mean(0) < 0.5, "layer 0: {}", mean(0));
    assert!(mean(15) > 0.9, "layer 15: {}", mean(15));
    assert!(mean(29) < mean(15) - 0.1, "last layer {} vs middle {}", mean(29), mean(15));
    assert!(f(&layers[15]["cosine_share_above"][0]) > 0.5);

    let csv = std::fs::read_to_string(out.join("profile.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 31);
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(&header[..3], ["layer", "cos_mean", "cos_p10"]);
    assert!(header.contains(&"share_cos_gt_0.95") && header.contains(&"cos_mean_pos_64_127"), "{header:?}");
    let row: Vec<&str> = lines[1 + 15].split(',').collect();
    assert_eq!((row.len(), row[0]), (header.len(), "15"));
    assert!((row[1].parse::<f64>().unwrap() - mean(15)).abs() < 1e-5);

    let png = std::fs::read(out.join("saturation.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((w, h), (1100, 900));
    assert!(png.len() > 20_000, "a drawn figure, not a blank one: {} bytes", png.len());

    let table = stdout(&run);
    assert_eq!(table.lines().count(), 32, "a Markdown table of 30 layers: {table}");
}

#[test]
fn calibrate_meets_the_target_and_generate_uses_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("smollm2.skip.json");
    let run = ffnskip(&[
        "calibrate", "--text", TEXT, "--target-ratio", "0.25", "--tokens", "240", "--window", "128", "--prefill",
        "32", "--out", config.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let json = read_json(&config);
    let policy = json["policy"].as_str().unwrap();
    assert!(policy.starts_with("ffnskip@") && policy.contains("tau="), "{policy}");
    let realised = f(&json["measured"]["realised_post_warmup"]);
    assert!((realised - 0.25).abs() <= 0.01, "realised {realised}");
    assert_eq!(json["measured"]["tokens"], 240);
    assert_eq!(json["measured"]["text"], TEXT);
    assert_eq!(json["calibration"]["mean_ffn_cosine"].as_array().unwrap().len(), 30);
    assert_eq!(json["calibration"]["mean_layer_cosine"].as_array().unwrap().len(), 30);
    assert!(f(&json["calibration"]["mean_ffn_cosine"][0]) < 0.5);
    assert!(stdout(&run).contains(&format!("chose {policy} ")), "{}", stdout(&run));

    let stats = dir.path().join("stats.json");
    let generate = |extra: &[&str]| {
        let args = ["generate", "--prompt", "The history of the city", "-n", "40", "--skip-config", config.to_str().unwrap(), "--stats-json", stats.to_str().unwrap()];
        let out = ffnskip(&[&args[..], extra].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        read_json(&stats)
    };
    let s = generate(&[]);
    assert_eq!(s["policy"], policy);
    assert!(f(&s["ffn_skip_ratio_post_warmup"]) > 0.0, "{s}");
    // An explicit policy wins; the config's calibration still feeds it.
    let s = generate(&["--skip", "static", "--skip-ratio", "0.1"]);
    assert_eq!(s["policy"], "static@0.1");
    assert!(f(&s["ffn_skip_ratio_post_warmup"]) > 0.09, "{s}");
}

/// Per-layer thresholds: each layer's own quantile, written into the config, used by the policy
/// the config names, and meeting the target like the global threshold does.
#[test]
fn calibrate_per_layer_writes_each_layers_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("per-layer.json");
    let run = ffnskip(&[
        "calibrate", "--text", TEXT, "--target-ratio", "0.2", "--tokens", "240", "--window", "128", "--prefill",
        "32", "--per-layer", "--quantiles", "0.5", "--out", config.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let json = read_json(&config);
    let policy = json["policy"].as_str().unwrap();
    assert!(policy.starts_with("ffnskip@") && policy.contains("tau=per-layer"), "{policy}");
    assert!((f(&json["measured"]["realised_post_warmup"]) - 0.2).abs() <= 0.01, "{json}");
    let taus: Vec<f64> = json["calibration"]["ffn_cosine_tau"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(taus.len(), 30);
    // Medians of different layers' cosines differ: the thresholds are per layer, not one tau.
    let (lo, hi) = taus.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    assert!(hi - lo > 0.05 && hi < 1.0, "{taus:?}");
    assert!(stdout(&run).contains("(quantile 0.5)"), "{}", stdout(&run));

    let stats = dir.path().join("stats.json");
    let args = ["generate", "--prompt", "The history of the city", "-n", "40", "--skip-config", config.to_str().unwrap(), "--stats-json", stats.to_str().unwrap()];
    let out = ffnskip(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = read_json(&stats);
    assert_eq!(s["policy"], policy);
    assert!(f(&s["ffn_skip_ratio_post_warmup"]) > 0.0, "{s}");
    // `bench` takes the same config for the policies that need its calibration.
    let rows = dir.path().join("bench.json");
    let bench = ["bench", "--policies", "ffnskip@0.2:tau=per-layer,static@0.2", "--runs", "1", "--pp", "16", "--tg", "40"];
    let out = ffnskip(&[&bench[..], &["--skip-config", config.to_str().unwrap(), "--json", rows.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_json(&rows);
    assert_eq!(rows[1]["policy"], "ffnskip@0.2:tau=per-layer");
    assert!(f(&rows[1]["ffn_skip_ratio_post_warmup"]) > 0.0 && f(&rows[2]["ffn_skip_ratio_post_warmup"]) > 0.0, "{rows}");
    // Without the config there are no thresholds to test against.
    let out = ffnskip(&["generate", "--prompt", "x", "-n", "2", "--policy", "ffnskip@0.2:tau=per-layer"]);
    assert_clean_failure(&out, "needs a calibration with per-layer thresholds");
    assert_clean_failure(&ffnskip(&bench), "needs a calibration with per-layer thresholds");
}

#[test]
fn calibrate_says_when_a_target_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.json");
    let run = ffnskip(&[
        "calibrate", "--text", TEXT, "--target-ratio", "0.95", "--tokens", "48", "--window", "48", "--prefill", "8",
        "--out", config.to_str().unwrap(),
    ]);
    assert_clean_failure(&run, "cannot be reached on this text: at most");
    assert!(!config.exists());
}

#[test]
fn bad_profile_and_calibrate_input_fails_in_one_line() {
    let out = ffnskip(&["profile", "--text", "/nonexistent/text.txt", "--tokens", "10"]);
    assert_clean_failure(&out, "reading the text file /nonexistent/text.txt");
    assert_clean_failure(&ffnskip(&["profile", "--text", TEXT, "--tokens", "0"]), "--tokens must be at least 1");
    assert_clean_failure(&ffnskip(&["profile", "--text", TEXT, "--window", "64", "--prefill", "64"]), "shorter than the window");
    let cal = |extra: &[&str]| ffnskip(&[&["calibrate", "--text", TEXT, "--out", "/tmp/never.json"][..], extra].concat());
    assert_clean_failure(&cal(&["--target-ratio", "1.5"]), "--target-ratio must be in (0, 1)");
    assert_clean_failure(&cal(&["--target-ratio", "0.2", "--policy-base", "dense"]), "skips nothing");
    assert_clean_failure(&cal(&["--target-ratio", "0.2", "--policy-base", "ffnskip:tau=2"]), "tau=2");
    assert_clean_failure(&cal(&["--target-ratio", "0.2", "--per-layer", "--policy-base", "random"]), "per-layer thresholds are ffnskip's");
    assert_clean_failure(&cal(&["--target-ratio", "0.2", "--per-layer", "--quantiles", "1.5"]), "a quantile must be in [0, 1)");

    // The old bare-calibration format is not a skip config.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    std::fs::write(&old, r#"{"mean_ffn_cosine": [0.9], "mean_layer_cosine": [0.9]}"#).unwrap();
    let out = ffnskip(&["generate", "--prompt", "x", "--skip-config", old.to_str().unwrap()]);
    assert_clean_failure(&out, "missing field `policy`");
}
