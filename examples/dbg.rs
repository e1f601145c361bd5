use ffnskip::model::{BlockCounts, Step};
use ffnskip::skip::{Dense, Phase};
fn main() {
    let e = ffnskip::Engine::load(std::path::Path::new("/tmp/ffh/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let prompt = std::env::args().nth(1).unwrap();
    let toks = e.tokenizer.encode(&prompt).unwrap();
    println!("{:?}", toks.iter().map(|&t| e.tokenizer.id_to_token(t).unwrap()).collect::<Vec<_>>());
    let mut c = BlockCounts::new(30);
    let mut cache = e.model.new_cache(256);
    let a = e.model.forward(Step{tokens:&toks,pos:0,phase:Phase::Prefill,all_logits:true}, &mut cache, &mut Dense, &mut c).unwrap();
    let mut cache2 = e.model.new_cache(256);
    let v = 49152;
    for (i,t) in toks.iter().enumerate() {
        let l = e.model.forward(Step{tokens:std::slice::from_ref(t),pos:i,phase:Phase::Decode,all_logits:false}, &mut cache2, &mut Dense, &mut c).unwrap();
        let d = l.iter().zip(&a[i*v..(i+1)*v]).map(|(x,y)|(x-y).abs()).fold(0f32,f32::max);
        let am = ffnskip::sampling::argmax(&l); let bm = ffnskip::sampling::argmax(&a[i*v..(i+1)*v]);
        println!("pos {i} maxdiff {d:.4} argmax {am} {bm}");
    }
}
