use serde_json::{json, Value};

use crate::common::{content, greedy_chat, rt, server};

#[test]
fn chat_answers_with_an_openai_shaped_completion() {
    rt().block_on(async {
        let s = server();
        let (status, body) = s.post("/v1/chat/completions", &greedy_chat("What is the capital of France?", 16)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "chat.completion");
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(body["model"], s.state.current().engine.info().name);
        assert_eq!(body["choices"].as_array().unwrap().len(), 1);
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert!(!content(&body, 0).trim().is_empty());
        assert!(["stop", "length"].contains(&body["choices"][0]["finish_reason"].as_str().unwrap()));
        let usage = &body["usage"];
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
        let completion = usage["completion_tokens"].as_u64().unwrap();
        assert!((1..=16).contains(&completion), "{usage}");
        assert_eq!(usage["total_tokens"].as_u64().unwrap(), usage["prompt_tokens"].as_u64().unwrap() + completion);
        assert!(body["choices"][0]["logprobs"].is_null(), "no log-probs unless asked");
    });
}

#[test]
fn streaming_chat_sends_chunks_then_done_and_matches_the_plain_answer() {
    rt().block_on(async {
        let s = server();
        let request = greedy_chat("Name three colours.", 20);
        let (_, plain) = s.post("/v1/chat/completions", &request).await;

        let mut streamed = request.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let events = s.stream("/v1/chat/completions", &streamed).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("chunk is JSON")).collect();
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, content(&plain, 0), "streamed text equals the non-streamed answer");
        let finishes: Vec<&Value> = chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
        assert_eq!(finishes.len(), 1);
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["completion_tokens"], plain["usage"]["completion_tokens"]);
    });
}

#[test]
fn n_choices_are_distinct_samples_and_a_seed_reproduces_them() {
    rt().block_on(async {
        let s = server();
        let request = json!({
            "model": "current",
            "messages": [{"role": "user", "content": "Write a short sentence about the sea."}],
            "n": 4, "temperature": 1.0, "top_p": 0.95, "max_tokens": 12, "seed": 1234,
        });
        let (status, first) = s.post("/v1/chat/completions", &request).await;
        assert_eq!(status, 200, "{first}");
        let choices = first["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 4);
        let indices: Vec<u64> = choices.iter().map(|c| c["index"].as_u64().unwrap()).collect();
        assert_eq!(indices, vec![0, 1, 2, 3]);
        let texts: Vec<String> = (0..4).map(|i| content(&first, i)).collect();
        let distinct: std::collections::HashSet<&String> = texts.iter().collect();
        assert!(distinct.len() >= 2, "sampled choices should differ: {texts:?}");

        let (_, again) = s.post("/v1/chat/completions", &request).await;
        let again: Vec<String> = (0..4).map(|i| content(&again, i)).collect();
        assert_eq!(texts, again, "the same seed gives the same choices");
    });
}

#[test]
fn logprobs_are_natural_log_probabilities_of_the_returned_tokens() {
    rt().block_on(async {
        let s = server();
        let mut request = greedy_chat("Say hello.", 10);
        request["logprobs"] = json!(true);
        request["top_logprobs"] = json!(3);
        let (status, body) = s.post("/v1/chat/completions", &request).await;
        assert_eq!(status, 200, "{body}");
        let tokens = body["choices"][0]["logprobs"]["content"].as_array().expect("logprobs.content");
        assert!(!tokens.is_empty());
        let joined: String = tokens.iter().map(|t| t["token"].as_str().unwrap()).collect();
        assert_eq!(joined, content(&body, 0), "tokens spell the answer");
        for t in tokens {
            let lp = t["logprob"].as_f64().unwrap();
            assert!(lp <= 0.0 && lp.is_finite(), "{t}");
            let top = t["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 3);
            let tops: Vec<f64> = top.iter().map(|a| a["logprob"].as_f64().unwrap()).collect();
            assert!(tops.windows(2).all(|w| w[0] >= w[1]), "best first: {tops:?}");
            // Greedy: the chosen token is the most likely one.
            assert_eq!(top[0]["token"], t["token"]);
            assert!((tops[0] - lp).abs() < 1e-4);
            let total: f64 = tops.iter().map(|l| l.exp()).sum();
            assert!(total <= 1.0 + 1e-4, "probabilities sum to at most 1: {total}");
            assert_eq!(t["bytes"].as_array().unwrap().len(), t["token"].as_str().unwrap().len());
        }
    });
}

#[test]
fn stop_sequences_end_the_answer_before_the_stop_text() {
    rt().block_on(async {
        let s = server();
        let request = greedy_chat("Describe a sunny day in two sentences.", 40);
        let (_, plain) = s.post("/v1/chat/completions", &request).await;
        let full = content(&plain, 0);
        let stop = full.split_whitespace().nth(3).expect("at least four words").to_string();
        let mut stopped = request.clone();
        stopped["stop"] = json!([stop]);
        let (status, body) = s.post("/v1/chat/completions", &stopped).await;
        assert_eq!(status, 200, "{body}");
        let text = content(&body, 0);
        assert!(!text.contains(&stop), "{text:?} must end before {stop:?}");
        assert_eq!(text, full[..full.find(&stop).unwrap()], "the answer up to the first {stop:?}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    });
}

#[test]
fn completions_continue_raw_text() {
    rt().block_on(async {
        let s = server();
        let request = json!({
            "model": s.state.current().engine.info().name,
            "prompt": "The three primary colours are",
            "max_tokens": 8, "temperature": 0, "logprobs": 2,
        });
        let (status, body) = s.post("/v1/completions", &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "text_completion");
        let text = body["choices"][0]["text"].as_str().unwrap();
        assert!(!text.is_empty());
        let lp = &body["choices"][0]["logprobs"];
        let tokens = lp["tokens"].as_array().unwrap();
        assert_eq!(tokens.iter().map(|t| t.as_str().unwrap()).collect::<String>(), text);
        assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), tokens.len());
        assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
        assert_eq!(lp["text_offset"][0], 0);
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= 8);

        let mut streamed = request.clone();
        streamed["stream"] = json!(true);
        let events = s.stream("/v1/completions", &streamed).await;
        assert_eq!(events.last().unwrap(), "[DONE]");
        let joined: String = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(joined, text);
    });
}

#[test]
fn ignore_eos_generates_to_the_token_limit() {
    rt().block_on(async {
        let s = server();
        // "Say OK." ends long before 48 tokens on its own.
        let (status, short) = s.post("/v1/chat/completions", &greedy_chat("Say OK.", 48)).await;
        assert_eq!(status, 200, "{short}");
        assert!(short["usage"]["completion_tokens"].as_u64().unwrap() < 48, "{short}");
        let mut request = greedy_chat("Say OK.", 48);
        request["ignore_eos"] = json!(true);
        let (status, body) = s.post("/v1/chat/completions", &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 48, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        let (status, body) = s
            .post("/v1/completions", &json!({"model": "current", "prompt": "OK.", "max_tokens": 20, "temperature": 0, "ignore_eos": true}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 20, "{body}");
    });
}
