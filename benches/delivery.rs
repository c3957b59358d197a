//! CPU path of one delivery, no network: parse the body → classify → render the postback, for a
//! typical paid order, an order with 50 line items and an upsell delivery (the bodies of
//! `events/*.json`). Besides criterion's time per delivery, it counts the heap allocations of one
//! delivery with a counting global allocator and prints them.
//!
//! `cargo bench --bench delivery` (or `make bench`, which runs every benchmark).

use cartpanda_redtrack::conversion::classify::{self, Decision};
use cartpanda_redtrack::conversion::rules::Rules;
use cartpanda_redtrack::inbound::webhook;
use cartpanda_redtrack::postback::template::PostbackTemplate;
use cartpanda_redtrack::postback::values::MacroContext;
use criterion::{Criterion, Throughput, criterion_group};
use serde_json::{Value, json};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The system allocator, counting allocations and bytes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// RedTrack's Cartpanda template as a merchant pastes it (a fixed status and protection token,
/// the PII parameters); `type` and `rdtk_event_id` are added by the parser.
const TEMPLATE: &str = "https://trk.example.com/postback?status=approved&clickid={cid}\
&sum={total_price}&fname={first_name}&lname={last_name}&phone={phone_number}&email={email}\
&contentid={product_id}&product={product_name}&currency={currency}&protect=fixed%20token";

/// The Cartpanda body inside one of the sample API Gateway events.
fn event_body(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect(&path))
        .expect("sample event is JSON");
    serde_json::from_str(event["body"].as_str().expect("sample event has a body"))
        .expect("sample body is JSON")
}

/// `paid-brl` with 50 line items (distinct products); `total_price` says their sum, but the
/// sample's `unformatted_total_price` (197.00) still decides the total (and the disagreement is
/// flagged), as it would in a real delivery shaped so.
fn fifty_items() -> Value {
    let mut body = event_body("paid-brl");
    let order = &mut body["order"];
    let first = order["line_items"][0].clone();
    let items: Vec<Value> = (0..50u64)
        .map(|i| {
            let mut item = first.clone();
            item["id"] = json!(60_118_243 + i);
            item["product_id"] = json!(29_662_470 + i);
            item["variant_id"] = json!(184_420_117 + i);
            item["sku"] = json!(format!("COLAG-VERISOL-{i}"));
            item["name"] = json!(format!("Colágeno Verisol Premium - Sabor {i}"));
            item["price"] = json!(19.9);
            item
        })
        .collect();
    order["line_items"] = Value::Array(items);
    order["total_price"] = json!("995,00");
    body
}

/// One delivery's CPU path; returns the rendered postbacks' total length so nothing is elided.
fn deliver(body: &[u8], rules: &Rules, template: &PostbackTemplate) -> usize {
    let delivery = webhook::parse(body).expect("parses");
    let classified = classify::classify(&delivery, rules).expect("classifies");
    let (Decision::Convert(conversions), Some(order)) = (&classified.decision, classified.order)
    else {
        panic!("the sample converts");
    };
    let order_id = classified.order_id.as_deref().unwrap_or_default();
    conversions
        .iter()
        .map(|conversion| {
            let context = MacroContext {
                order,
                order_id,
                conversion,
                random: 123_456_789,
                normalize: true,
            };
            template.render(|m| context.value(m)).as_str().len()
        })
        .sum()
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("paid_order", event_body("paid-brl")),
        ("fifty_line_items", fifty_items()),
        ("upsell", event_body("upsell-second")),
    ]
    .into_iter()
    .map(|(name, body)| (name, body.to_string().into_bytes()))
    .collect()
}

fn bench(c: &mut Criterion) {
    let rules = Rules::default();
    let template = PostbackTemplate::parse(TEMPLATE, false).expect("template parses");
    let mut group = c.benchmark_group("delivery");
    for (name, body) in cases() {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| deliver(black_box(&body), &rules, &template))
        });
    }
    group.finish();
}

/// Allocations of one delivery (the same on every run: nothing here depends on time).
fn allocations() {
    let rules = Rules::default();
    let template = PostbackTemplate::parse(TEMPLATE, false).expect("template parses");
    println!("\nallocations per delivery (parse → classify → render):");
    for (name, body) in cases() {
        deliver(&body, &rules, &template);
        let (a0, b0) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
        let rendered = black_box(deliver(black_box(&body), &rules, &template));
        let (a1, b1) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
        println!(
            "  delivery/{name:<18} body {:>6} B  {:>5} allocations  {:>7} B allocated  postback {rendered} B",
            body.len(),
            a1 - a0,
            b1 - b0
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    allocations();
}
