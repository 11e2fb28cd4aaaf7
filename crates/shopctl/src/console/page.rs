//! The console's HTML, rendered on the server: the whole page, and the fragments the page's
//! event stream replaces as things change (`services`, `orders`, `dead-letters`). Everything
//! that comes from outside is escaped.

use std::fmt::Write;

use contract::OrderStatus;

use super::feed::Order;
use super::status::{DeadLetters, Letter, ServiceStatus};
use crate::trace::summary;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f6f7f9; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; } h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e3e6eb; vertical-align: top; }
th { background: #eef0f4; font-weight: 600; }
code { font: 12px ui-monospace, monospace; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: .6rem; font-size: 12px; font-weight: 600; }
.PENDING { background: #fff3c4; } .CONFIRMED { background: #c9f2d4; } .CANCELLED { background: #ffd6d6; }
.up { color: #137333; } .down { color: #b3261e; } .unknown { color: #7a7f8a; }
details > summary { cursor: pointer; list-style: none; } details > summary::-webkit-details-marker { display: none; }
details[open] > summary { font-weight: 600; }
.timeline { margin: .4rem 0 .6rem 1.2rem; width: calc(100% - 1.2rem); }
.timeline td { border-bottom: 1px dashed #e3e6eb; }
form.order { background: #fff; padding: .6rem; display: flex; gap: .8rem; align-items: end; flex-wrap: wrap; }
form.order label { display: flex; flex-direction: column; font-size: 12px; }
form.order input { width: 7rem; }
.note { color: #5b6170; font-size: 12px; } .error { color: #b3261e; }
.grid { display: grid; grid-template-columns: 1fr; gap: 0; }
"#;

/// Keeps open timelines open when a fragment is replaced, and replaces fragments as the
/// server sends them. Without JavaScript the page still shows everything as of its load.
const SCRIPT: &str = r#"
const stream = new EventSource('events');
for (const id of ['services', 'orders', 'dead-letters']) {
  stream.addEventListener(id, (event) => {
    const target = document.getElementById(id);
    const open = [...target.querySelectorAll('details[open]')].map((d) => d.id);
    target.innerHTML = event.data;
    for (const name of open) { const d = document.getElementById(name); if (d) d.open = true; }
  });
}
"#;

/// The whole page.
pub fn page(
    services: &[ServiceStatus],
    orders: &[Order],
    dead_letters: &[DeadLetters],
    notice: Option<&str>,
) -> String {
    let notice = notice
        .map(|n| format!("<p class=\"note\" id=\"notice\">{}</p>", escape(n)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Order saga console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body>
<h1>Order saga console</h1>
{notice}
<h2>Services</h2>
<div id="services">{services}</div>
<h2>Place an order</h2>
{form}
<h2>Orders</h2>
<div id="orders">{orders}</div>
<h2>Dead letters</h2>
<div id="dead-letters">{dead_letters}</div>
<script>{SCRIPT}</script>
</body></html>
"#,
        services = services_fragment(services),
        form = order_form(),
        orders = orders_fragment(orders),
        dead_letters = dead_letters_fragment(dead_letters),
    )
}

fn order_form() -> &'static str {
    r#"<form class="order" method="post" action="orders">
<label>user <input name="user_id" type="number" min="1" value="1" required></label>
<label>product <input name="product_id" type="number" min="1" value="1" required></label>
<label>quantity <input name="quantity" type="number" min="1" max="10000" value="1" required></label>
<label>coupon (optional) <input name="coupon_id" type="number" min="1"></label>
<button type="submit">Place order</button>
<span class="note">posts to the order service's <code>POST /orders</code></span>
</form>"#
}

fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "–".into(),
    }
}

/// Readiness, lag, backlog, dead letters and the breaker, one row per service.
pub fn services_fragment(services: &[ServiceStatus]) -> String {
    let mut html = String::from(
        "<table><tr><th>service</th><th>ready</th><th>consumer lag</th><th>outbox backlog</th>\
         <th>oldest unsent</th><th>dead-lettered</th><th>breaker</th></tr>",
    );
    for s in services {
        let ready = match s.ready {
            Some(true) => "<span class=\"up\">ready</span>".to_owned(),
            Some(false) => format!(
                "<span class=\"down\">not ready</span> <span class=\"note\">{}</span>",
                escape(s.reason.as_deref().unwrap_or_default())
            ),
            None => "<span class=\"unknown\">unreachable</span>".to_owned(),
        };
        let breaker = match s.breaker_open {
            Some(true) => "<span class=\"down\">open</span>",
            Some(false) => "<span class=\"up\">closed</span>",
            None => "–",
        };
        let oldest = s
            .outbox_oldest_age_s
            .map(|age| format!("{age:.1} s"))
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            html,
            "<tr data-service=\"{name}\"><td>{name}</td><td>{ready}</td><td>{lag}</td>\
             <td>{backlog}</td><td>{oldest}</td><td>{dead}</td><td>{breaker}</td></tr>",
            name = escape(s.name),
            lag = number(s.consumer_lag),
            backlog = number(s.outbox_backlog),
            dead = number(s.dead_lettered),
        );
    }
    html.push_str("</table>");
    html
}

fn badge(status: OrderStatus) -> String {
    format!(
        "<span class=\"badge {0}\" data-status=\"{0}\">{0}</span>",
        status.as_str()
    )
}

fn money(amount: Option<i64>) -> String {
    match amount {
        Some(minor) => format!("{}.{:02}", minor / 100, (minor % 100).abs()),
        None => "–".into(),
    }
}

/// Every kept order, the most recent first, each with its timeline folded under it.
pub fn orders_fragment(orders: &[Order]) -> String {
    if orders.is_empty() {
        return "<p class=\"note\">No orders yet: place one above, or post to the order service.</p>"
            .into();
    }
    let mut html = String::new();
    for order in orders {
        let _ = write!(
            html,
            "<details id=\"order-{id}\" data-order=\"{id}\"><summary>{at} · <code>{id}</code> · \
             user {user} · total {total} · final {final_} · {badge}{why}</summary>{timeline}</details>",
            id = escape(&order.order_id),
            at = order.started_at.format("%H:%M:%S%.3f"),
            user = order
                .user_id
                .map(|u| u.to_string())
                .unwrap_or_else(|| "–".into()),
            total = money(order.total_amount),
            final_ = money(order.final_amount),
            badge = badge(order.status),
            why = order
                .cancelled
                .as_deref()
                .map(|why| format!(" <span class=\"note\">{}</span>", escape(why)))
                .unwrap_or_default(),
            timeline = timeline(order),
        );
    }
    html
}

/// One order's events across the services, oldest first: what `shopctl trace` prints.
pub fn timeline(order: &Order) -> String {
    let mut html = String::from(
        "<table class=\"timeline\"><tr><th>occurred at</th><th>service</th><th>event</th>\
         <th>topic</th><th>trace</th><th>summary</th></tr>",
    );
    for step in &order.steps {
        let _ = write!(
            html,
            "<tr data-event=\"{event}\"><td>{at}</td><td>{service}</td><td>{event}</td>\
             <td>{topic}</td><td><code>{trace}</code></td><td>{summary}</td></tr>",
            at = step.envelope.occurred_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            service = escape(&step.envelope.producer),
            event = step.envelope.event.event_type(),
            topic = escape(&step.topic),
            trace = escape(step.trace_id.get(..8).unwrap_or(&step.trace_id)),
            summary = escape(&summary(&step.envelope.event)),
        );
    }
    html.push_str("</table>");
    html
}

/// Most dead letters listed per service, newest first; `shopctl dlq list` shows them all.
const LETTERS_SHOWN: usize = 20;

/// Most characters of a letter's value shown; `shopctl dlq show` prints it whole.
const PAYLOAD_SHOWN: usize = 2_000;

/// The dead letters of each consuming service, each in full (type, key, source, error and
/// value, all escaped), with a button that replays that one letter once, where it may be.
pub fn dead_letters_fragment(all: &[DeadLetters]) -> String {
    let mut html = String::from("<table><tr><th>service</th><th>waiting</th><th>letters</th></tr>");
    for d in all {
        let (count, letters) = match &d.letters {
            None => ("–".to_owned(), String::new()),
            Some(letters) => {
                let waiting = letters.iter().filter(|l| l.replayed_at.is_none()).count();
                let shown = letters
                    .iter()
                    .rev()
                    .take(LETTERS_SHOWN)
                    .map(|l| letter(d.service, l))
                    .collect::<String>();
                (waiting.to_string(), shown)
            }
        };
        let _ = write!(
            html,
            "<tr data-dlq=\"{name}\"><td>{name}</td><td>{count}</td><td>{letters}</td></tr>",
            name = escape(d.service),
        );
    }
    html.push_str("</table>");
    html
}

/// One dead letter and what can be done with it.
fn letter(service: &str, l: &Letter) -> String {
    let mut payload: String = l.payload.chars().take(PAYLOAD_SHOWN).collect();
    if payload.len() < l.payload.len() {
        payload.push('…');
    }
    let action = match (&l.replayed_at, &l.refused) {
        (Some(at), _) => format!("<span>replayed {}</span>", escape(at)),
        (None, Some(reason)) => format!(
            "<span class=\"error\">not replayable: {}</span>",
            escape(reason)
        ),
        (None, None) => format!(
            "<form method=\"post\" action=\"dead-letters/{service}/replay\">\
             <input type=\"hidden\" name=\"offset\" value=\"{offset}\">\
             <input name=\"token\" type=\"password\" placeholder=\"admin token\" required> \
             <button type=\"submit\">Replay this letter</button></form>",
            service = escape(service),
            offset = l.offset,
        ),
    };
    format!(
        "<details data-offset=\"{offset}\"><summary><code>{event_type}</code> {failed_at} \
         <span class=\"error\">{error}</span></summary>\
         <dl><dt>offset</dt><dd>{offset}</dd><dt>event id</dt><dd><code>{event_id}</code></dd>\
         <dt>key</dt><dd><code>{key}</code></dd><dt>source</dt><dd><code>{source}</code></dd>\
         <dt>value</dt><dd><pre>{payload}</pre></dd></dl>{action}</details>",
        offset = l.offset,
        event_type = escape(&l.event_type),
        failed_at = escape(&l.failed_at),
        error = escape(&l.error),
        event_id = escape(&l.event_id),
        key = escape(&l.key),
        source = escape(&l.source),
        payload = escape(&payload),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_cannot_become_markup() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn amounts_show_in_major_units() {
        assert_eq!(money(Some(2700)), "27.00");
        assert_eq!(money(Some(5)), "0.05");
        assert_eq!(money(None), "–");
    }
}
