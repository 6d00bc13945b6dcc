//! Property tests of format conversion: for every pair of wire formats A ≠ B, a generated
//! request, response or stream in format A, converted to B and back to A, says the same thing
//! again wherever both formats can express it: messages and their roles, text, images, tool
//! definitions, calls and results, sampling parameters, the stream flag, finish reasons and
//! usage. Streams are cut into random chunks on every hop.
//!
//! Generated conversations are first written as OpenAI Chat Completions (one test-side writer)
//! and converted once to A; the A form is checked against the generated conversation too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use llm_adapters::{ClientFormat, Conversion};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::{
    ALL_FORMATS, Answer, Conversation, Item, Turn, read_request, read_response, read_stream,
};

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Text with something to say: blank text is dropped on purpose (the providers refuse it), and
/// `convert_validity.rs` covers it.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?'\"é😀\\n]{1,24}".prop_filter("not blank", |t| !t.trim().is_empty())
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,8}"
}

fn args() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-z]{1,5}",
        prop_oneof![
            text().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn image() -> impl Strategy<Value = Item> {
    prop_oneof![
        "[a-z]{1,8}\\.(png|jpg|webp)"
            .prop_map(|f| Item::ImageUrl(format!("https://img.example/{f}"))),
        ("(png|jpeg|webp)", "[A-Za-z0-9+/]{4,16}").prop_map(|(kind, data)| Item::ImageData {
            mime: format!("image/{kind}"),
            data: format!("{data}=="),
        }),
    ]
}

fn result_content() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9 :.]{1,16}"
            .prop_filter("not blank", |t| !t.trim().is_empty())
            .prop_map(Value::String),
        args().prop_filter("non-empty object", |v| !v.as_object().unwrap().is_empty()),
    ]
}

/// One exchange after a user turn: an assistant answer, or an assistant tool round (calls and
/// their results).
#[derive(Debug, Clone)]
enum Step {
    Say(Vec<String>),
    Call(Vec<String>, Vec<(String, Value, Value)>),
}

fn step(tool_names: Vec<String>) -> impl Strategy<Value = Step> {
    let call_name = if tool_names.is_empty() {
        name().boxed()
    } else {
        prop::sample::select(tool_names).boxed()
    };
    prop_oneof![
        prop::collection::vec(text(), 1..3).prop_map(Step::Say),
        (
            prop::collection::vec(text(), 0..2),
            prop::collection::vec((call_name, args(), result_content()), 1..4)
        )
            .prop_map(|(texts, calls)| Step::Call(texts, calls)),
    ]
}

fn user_turn() -> impl Strategy<Value = Vec<Item>> {
    (
        text(),
        prop::collection::vec(prop_oneof![text().prop_map(Item::Text), image()], 0..3),
    )
        .prop_map(|(first, rest)| {
            let mut items = vec![Item::Text(first)];
            items.extend(rest);
            items
        })
}

fn tools() -> impl Strategy<Value = Vec<(String, Option<String>, Value)>> {
    prop::collection::btree_map(
        name(),
        (
            prop::option::of(text()),
            prop::collection::btree_set("[a-z]{1,6}", 0..3),
        ),
        0..3,
    )
    .prop_map(|tools| {
        tools
            .into_iter()
            .map(|(name, (description, props))| {
                let properties: Map<String, Value> = props
                    .iter()
                    .map(|p| (p.clone(), json!({"type": "string"})))
                    .collect();
                let schema = json!({"type": "object", "properties": properties, "required": props});
                (name, description, schema)
            })
            .collect()
    })
}

/// A sampling parameter as clients send them: 0 to 1 in steps of 0.01.
fn unit_decimal() -> impl Strategy<Value = f64> {
    (0u32..=100).prop_map(|x| f64::from(x) / 100.0)
}

fn conversation() -> impl Strategy<Value = Conversation> {
    tools().prop_flat_map(|tools| {
        let names: Vec<String> = tools.iter().map(|t| t.0.clone()).collect();
        let choice = if names.is_empty() {
            prop_oneof![
                Just(None),
                Just(Some("auto".to_owned())),
                Just(Some("none".to_owned()))
            ]
            .boxed()
        } else {
            prop_oneof![
                Just(None),
                Just(Some("auto".to_owned())),
                Just(Some("none".to_owned())),
                Just(Some("required".to_owned())),
                prop::sample::select(names.clone()).prop_map(|n| Some(format!("fn:{n}"))),
            ]
            .boxed()
        };
        (
            Just(tools),
            choice,
            "[a-z][a-z0-9.-]{0,15}",
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(
                (user_turn(), prop::collection::vec(step(names), 0..3)),
                1..3,
            ),
            prop::option::of(user_turn()),
            (
                1u64..200_000,
                prop::option::of(unit_decimal()),
                prop::option::of(unit_decimal()),
                prop::collection::vec("[A-Z#]{1,5}", 0..3),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(tools, tool_choice, model, system, rounds, last_user, params)| {
                    let (max_tokens, temperature, top_p, stop, stream) = params;
                    let mut c = Conversation {
                        model: Some(model),
                        system,
                        tools,
                        tool_choice,
                        max_tokens: Some(max_tokens),
                        temperature,
                        top_p,
                        stop,
                        stream,
                        ..Conversation::default()
                    };
                    for (user, steps) in rounds {
                        push_turn(&mut c, Turn::User, user);
                        for step in steps {
                            match step {
                                Step::Say(texts) => {
                                    let items = texts.into_iter().map(Item::Text).collect();
                                    push_turn(&mut c, Turn::Assistant, items);
                                    // An answer hands the turn back to the user.
                                    break;
                                }
                                Step::Call(texts, calls) => {
                                    let mut items: Vec<Item> =
                                        texts.into_iter().map(Item::Text).collect();
                                    let mut results = Vec::new();
                                    for (name, args, content) in calls {
                                        items.push(Item::Call {
                                            name: name.clone(),
                                            args,
                                        });
                                        results.push(Item::Result {
                                            call: name,
                                            content,
                                        });
                                    }
                                    push_turn(&mut c, Turn::Assistant, items);
                                    push_turn(&mut c, Turn::Tool, results);
                                }
                            }
                        }
                    }
                    if let Some(user) = last_user {
                        push_turn(&mut c, Turn::User, user);
                    }
                    c
                },
            )
    })
}

/// Appends a turn, merging with the previous one of the same kind as the readers do.
fn push_turn(c: &mut Conversation, turn: Turn, items: Vec<Item>) {
    match c.turns.last_mut() {
        Some((t, existing)) if *t == turn => existing.extend(items),
        _ => c.turns.push((turn, items)),
    }
}

// ---------------------------------------------------------------------------------------------
// The OpenAI Chat writer.

fn openai_request(c: &Conversation) -> Vec<u8> {
    let mut messages: Vec<Value> = c
        .system
        .iter()
        .map(|s| json!({"role": "system", "content": s}))
        .collect();
    let mut last_ids: Vec<String> = Vec::new();
    let mut next_id = 0;
    for (turn, items) in &c.turns {
        match turn {
            Turn::User => {
                let parts: Vec<Value> = items
                    .iter()
                    .map(|item| match item {
                        Item::Text(t) => json!({"type": "text", "text": t}),
                        Item::ImageUrl(url) => json!({"type": "image_url", "image_url": {"url": url}}),
                        Item::ImageData { mime, data } => json!({"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{data}")}}),
                        other => panic!("user item {other:?}"),
                    })
                    .collect();
                messages.push(json!({"role": "user", "content": parts}));
            }
            Turn::Assistant => {
                let texts: Vec<Value> = items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Text(t) => Some(json!({"type": "text", "text": t})),
                        _ => None,
                    })
                    .collect();
                last_ids.clear();
                let calls: Vec<Value> = items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Call { name, args } => {
                            let id = format!("call_{next_id}x{}", name.len());
                            next_id += 1;
                            last_ids.push(id.clone());
                            Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}))
                        }
                        _ => None,
                    })
                    .collect();
                let mut m = json!({"role": "assistant", "content": if texts.is_empty() { Value::Null } else { Value::Array(texts) }});
                if !calls.is_empty() {
                    m["tool_calls"] = Value::Array(calls);
                }
                messages.push(m);
            }
            Turn::Tool => {
                for (i, item) in items.iter().enumerate() {
                    let Item::Result { content, .. } = item else {
                        panic!("tool item {item:?}")
                    };
                    let text = match content {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    messages.push(
                        json!({"role": "tool", "tool_call_id": last_ids[i], "content": text}),
                    );
                }
            }
        }
    }
    let mut body = json!({"model": c.model, "messages": messages, "max_tokens": c.max_tokens, "stream": c.stream});
    if !c.tools.is_empty() {
        body["tools"] = c
            .tools
            .iter()
            .map(|(name, description, schema)| {
                let mut f = json!({"name": name, "parameters": schema});
                if let Some(d) = description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
    }
    if let Some(choice) = &c.tool_choice {
        body["tool_choice"] = match choice.strip_prefix("fn:") {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => json!(choice),
        };
    }
    if let Some(t) = c.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = c.top_p {
        body["top_p"] = json!(p);
    }
    if !c.stop.is_empty() {
        body["stop"] = json!(c.stop);
    }
    serde_json::to_vec(&body).unwrap()
}

/// The action a format's client uses for `c`.
fn action_for(format: ClientFormat, c: &Conversation) -> String {
    match format {
        ClientFormat::Openai => "v1/chat/completions".to_owned(),
        ClientFormat::OpenaiResponses => "v1/responses".to_owned(),
        ClientFormat::Anthropic => "v1/messages".to_owned(),
        ClientFormat::Gemini => format!(
            "v1beta/models/{}:{}",
            c.model.as_deref().unwrap(),
            if c.stream {
                "streamGenerateContent"
            } else {
                "generateContent"
            }
        ),
    }
}

/// What `c` becomes in `format` where the format cannot say everything.
fn as_expressed_by(mut c: Conversation, format: ClientFormat) -> Conversation {
    // Anthropic refuses a final assistant turn (a prefill) ending in whitespace.
    if format == ClientFormat::Anthropic
        && let Some((Turn::Assistant, items)) = c.turns.last_mut()
        && let Some(Item::Text(text)) = items.last_mut()
    {
        *text = text.trim_end().to_owned();
    }
    if format == ClientFormat::OpenaiResponses {
        c.stop.clear();
        if c.system.len() > 1 {
            c.system = vec![c.system.join("\n\n")];
        }
    }
    c
}

/// `c` in format A (converted from the OpenAI writer's output).
fn in_format(a: ClientFormat, c: &Conversation) -> (String, Vec<u8>) {
    let body = openai_request(c);
    if a == ClientFormat::Openai {
        return ("v1/chat/completions".to_owned(), body);
    }
    let converted = Conversion::between(ClientFormat::Openai, a)
        .unwrap()
        .request("v1/chat/completions", "", &body)
        .unwrap();
    (converted.action, converted.body)
}

fn pairs() -> Vec<(ClientFormat, ClientFormat)> {
    ALL_FORMATS
        .into_iter()
        .flat_map(|a| ALL_FORMATS.into_iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn requests_survive_a_round_trip_through_every_other_format(c in conversation()) {
        for a in ALL_FORMATS {
            let (action_a, body_a) = in_format(a, &c);
            prop_assert_eq!(action_a.clone(), action_for(a, &c));
            let original = read_request(a, &action_a, &body_a);
            prop_assert_eq!(&original, &as_expressed_by(c.clone(), a), "generated → {:?}", a);
            for b in ALL_FORMATS.into_iter().filter(|b| *b != a) {
                let there = Conversion::between(a, b).unwrap().request(&action_a, "", &body_a).unwrap();
                prop_assert_eq!(there.stream, c.stream);
                let back = Conversion::between(b, a).unwrap().request(&there.action, &there.query, &there.body).unwrap();
                prop_assert_eq!(back.action.clone(), action_a.clone());
                let round_tripped = read_request(a, &back.action, &back.body);
                prop_assert_eq!(&round_tripped, &as_expressed_by(original.clone(), b), "{:?} → {:?} → {:?}", a, b, a);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses and streams.

#[derive(Debug, Clone)]
struct Generated {
    text: Option<Vec<String>>,
    calls: Vec<(String, String, Value)>,
    /// OpenAI finish_reason
    finish: &'static str,
    input: u64,
    output: u64,
    cached: Option<u64>,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop::option::of(prop::collection::vec(text(), 1..4)),
        prop::collection::vec(("call_[A-Za-z0-9]{8}", name(), args()), 0..3),
        prop_oneof![Just("stop"), Just("length"), Just("content_filter")],
        0u64..1_000_000,
        0u64..100_000,
        prop::option::of(0u64..1_000_000),
    )
        .prop_map(|(text, calls, finish, input, output, cached)| {
            let finish = if calls.is_empty() {
                finish
            } else {
                "tool_calls"
            };
            let text = if calls.is_empty() && text.is_none() {
                Some(vec!["ok".to_owned()])
            } else {
                text
            };
            Generated {
                text,
                calls,
                finish,
                input,
                output,
                cached: cached.map(|c| c.min(input)),
            }
        })
}

fn usage_json(g: &Generated) -> Value {
    let mut usage = json!({"prompt_tokens": g.input, "completion_tokens": g.output, "total_tokens": g.input + g.output});
    if let Some(cached) = g.cached {
        usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    usage
}

fn openai_response(g: &Generated) -> Vec<u8> {
    let calls: Vec<Value> = g
        .calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}))
        .collect();
    let mut message = json!({"role": "assistant", "content": g.text.as_ref().map(|t| t.concat())});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    serde_json::to_vec(&json!({
        "id": "chatcmpl-gen", "object": "chat.completion", "created": 1, "model": "gen-model",
        "choices": [{"index": 0, "message": message, "finish_reason": g.finish}],
        "usage": usage_json(g),
    }))
    .unwrap()
}

fn openai_stream(g: &Generated, splits: &[usize]) -> Vec<u8> {
    let mut out = String::new();
    let mut chunk = |delta: Value, finish: Option<&str>, usage: Option<Value>| {
        let mut c = json!({"id": "chatcmpl-gen", "object": "chat.completion.chunk", "created": 1, "model": "gen-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(u) = usage {
            c["usage"] = u;
            c["choices"] = json!([]);
        }
        out.push_str(&format!("data: {c}\n\n"));
    };
    chunk(json!({"role": "assistant", "content": ""}), None, None);
    for piece in g.text.iter().flatten() {
        chunk(json!({"content": piece}), None, None);
    }
    for (index, (id, name, args)) in g.calls.iter().enumerate() {
        chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
            None,
        );
        let text = args.to_string();
        let chars: Vec<char> = text.chars().collect();
        let cut = splits.get(index).copied().unwrap_or(0) % (chars.len() + 1);
        for part in [&chars[..cut], &chars[cut..]] {
            if !part.is_empty() {
                let s: String = part.iter().collect();
                chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": s}}]}),
                    None,
                    None,
                );
            }
        }
    }
    chunk(json!({}), Some(g.finish), None);
    chunk(json!({}), None, Some(usage_json(g)));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// What must survive: ids are compared only when neither side is Gemini (which has none), and
/// a missing cached count equals zero (the Responses format always states one).
fn comparable(answer: &Answer, with_ids: bool) -> Answer {
    let mut a = answer.clone();
    if !with_ids {
        for call in &mut a.calls {
            call.0.clear();
        }
    }
    a.cached_tokens = Some(a.cached_tokens.unwrap_or(0));
    a
}

fn convert_stream(conversion: Conversion, bytes: &[u8], chunk: usize) -> Vec<u8> {
    let mut stream = conversion.stream();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        out.extend_from_slice(&stream.push(piece));
    }
    out.extend_from_slice(&stream.finish());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn responses_survive_a_round_trip_through_every_other_format(g in generated()) {
        let seed = openai_response(&g);
        for (a, b) in pairs() {
            let body_a = if a == ClientFormat::Openai {
                seed.clone()
            } else {
                Conversion::between(a, ClientFormat::Openai).unwrap().response(200, &seed).body
            };
            let original = read_response(a, &body_a);
            let there = Conversion::between(b, a).unwrap().response(200, &body_a);
            prop_assert_eq!(there.status, 200);
            let back = Conversion::between(a, b).unwrap().response(200, &there.body);
            prop_assert_eq!(back.status, 200);
            let with_ids = a != ClientFormat::Gemini && b != ClientFormat::Gemini;
            prop_assert_eq!(
                comparable(&read_response(a, &back.body), with_ids),
                comparable(&original, with_ids),
                "{:?} → {:?} → {:?}", a, b, a
            );
            prop_assert_eq!(original.input_tokens, g.input);
            prop_assert_eq!(original.output_tokens, g.output);
        }
    }

    #[test]
    fn streams_survive_a_round_trip_through_every_other_format(
        g in generated(),
        splits in prop::collection::vec(any::<usize>(), 3),
        chunks in prop::collection::vec(1usize..300, 3),
    ) {
        let seed = openai_stream(&g, &splits);
        for (a, b) in pairs() {
            let stream_a = if a == ClientFormat::Openai {
                seed.clone()
            } else {
                convert_stream(Conversion::between(a, ClientFormat::Openai).unwrap(), &seed, chunks[0])
            };
            let original = read_stream(a, &stream_a);
            prop_assert_eq!(original.error.clone(), None);
            prop_assert_eq!(&original.text, &g.text.clone().unwrap_or_default().concat());
            prop_assert_eq!(original.calls.len(), g.calls.len());
            let there = convert_stream(Conversion::between(b, a).unwrap(), &stream_a, chunks[1]);
            let back = convert_stream(Conversion::between(a, b).unwrap(), &there, chunks[2]);
            let with_ids = a != ClientFormat::Gemini && b != ClientFormat::Gemini;
            prop_assert_eq!(
                comparable(&read_stream(a, &back), with_ids),
                comparable(&original, with_ids),
                "{:?} → {:?} → {:?}", a, b, a
            );
        }
    }
}
