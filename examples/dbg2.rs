fn main() {
    let mut f = std::fs::File::open("/tmp/ffh/SmolLM2-135M-Instruct.Q4_1.gguf").unwrap();
    let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut m = std::collections::BTreeMap::new();
    for (n, i) in &c.tensor_infos { let k = n.split('.').filter(|s| s.parse::<u32>().is_err()).collect::<Vec<_>>().join("."); m.insert(k, format!("{:?}", i.ggml_dtype)); }
    println!("{m:#?}");
    for (k,v) in &c.metadata { if !k.starts_with("tokenizer.ggml.t") && !k.starts_with("tokenizer.ggml.merges") && !k.contains("scores") { println!("{k} = {:?}", v); } }
}
