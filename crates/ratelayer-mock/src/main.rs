//! `ratelayer-mock`: serve the mock LLM provider on a loopback address.
//!
//! ```text
//! cargo run -p ratelayer-mock -- --dialect openai --rpm 60 --tpm 10000
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use ratelayer_core::Dialect;
use ratelayer_mock::{ConcurrencyMode, Fault, Latency, MockBuilder, MockProvider, Tier};

const HELP: &str = "\
ratelayer-mock: an honest mock LLM provider that enforces rate limits

USAGE: ratelayer-mock [OPTIONS]

OPTIONS:
  --dialect <openai|azure|anthropic|gemini|groq>   response dialect (default openai)
  --tier <free|1..5>          limits of a usage tier (later limit flags override)
  --rpm <N>                   requests per minute
  --tpm <N>                   tokens per minute
  --itpm <N>                  input tokens per minute
  --otpm <N>                  output tokens per minute
  --rpd <N>                   requests per day
  --concurrency <N>           requests in flight at once
  --queue                     queue requests above the concurrency limit (default: 429)
  --context-window <N>        context window in tokens
  --completion-fraction <F>   fraction of max_tokens really generated (default 0.5)
  --latency <D | MIN..MAX | exp:MEAN>
                              added latency: fixed, uniform or exponential,
                              e.g. 200ms, 50ms..300ms, exp:800ms
  --stream-delay <D>          delay between streamed events
  --fault <SPEC>              a fault (repeatable): KIND[:P] with KIND one of
                              500, 502, 503, 529, quota, close, cut, latency=D
                              and P a probability (default 1), e.g. 503:0.1
  --seed <N>                  seed of faults and latency (default 0)
  --port <N>                  port on 127.0.0.1 (default 0: any free port)
  -h, --help                  this help
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let (builder, port) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ratelayer-mock: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let provider = match builder.build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ratelayer-mock: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ratelayer-mock: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let server = match ratelayer_mock::serve(provider.clone(), addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ratelayer-mock: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("ratelayer-mock listening on {}", server.url());
        println!("{provider:?}");
        let _ = tokio::signal::ctrl_c().await;
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag}: {s:?} is not a valid number"))
}

/// `250ms`, `2s`, `1.5s`, `1m`, or a bare number of milliseconds.
fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (like 250ms, 2s, 1.5s, 1m)");
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

fn dialect(s: &str) -> Result<Dialect, String> {
    match s.to_ascii_lowercase().as_str() {
        "openai" => Ok(Dialect::OpenAi),
        "azure" => Ok(Dialect::Azure),
        "anthropic" => Ok(Dialect::Anthropic),
        "gemini" => Ok(Dialect::Gemini),
        "groq" => Ok(Dialect::Groq),
        _ => Err(format!(
            "unknown dialect {s:?}: use openai, azure, anthropic, gemini or groq"
        )),
    }
}

fn fault(spec: &str) -> Result<Fault, String> {
    let (kind, p) = match spec.rsplit_once(':') {
        Some((k, p)) => (k, number::<f64>(p, "--fault")?),
        None => (spec, 1.0),
    };
    let f = match kind {
        "500" => Fault::internal_error(),
        "502" => Fault::bad_gateway(),
        "503" => Fault::unavailable(),
        "529" => Fault::overloaded(),
        "quota" => Fault::quota_exhausted(),
        "close" => Fault::connection_closed(),
        "cut" => Fault::stream_cut(),
        k => match k.strip_prefix("latency=") {
            Some(d) => Fault::latency(duration(d)?),
            None => return Err(format!("--fault: unknown kind {k:?}")),
        },
    };
    Ok(f.probability(p))
}

fn parse(args: &[String]) -> Result<(MockBuilder, u16), String> {
    let mut b = MockProvider::builder();
    let mut port = 0u16;
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--dialect" => b = b.dialect(dialect(value(args, &mut i, flag)?)?),
            "--tier" => {
                let t: Tier = value(args, &mut i, flag)?
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                b = b.tier(t);
            }
            "--rpm" => b = b.rpm(number(value(args, &mut i, flag)?, flag)?),
            "--tpm" => b = b.tpm(number(value(args, &mut i, flag)?, flag)?),
            "--itpm" => b = b.itpm(number(value(args, &mut i, flag)?, flag)?),
            "--otpm" => b = b.otpm(number(value(args, &mut i, flag)?, flag)?),
            "--rpd" => b = b.rpd(number(value(args, &mut i, flag)?, flag)?),
            "--concurrency" => b = b.concurrency(number(value(args, &mut i, flag)?, flag)?),
            "--queue" => b = b.concurrency_mode(ConcurrencyMode::Queue),
            "--context-window" => {
                b = b.context_window(number(value(args, &mut i, flag)?, flag)?);
            }
            "--completion-fraction" => {
                b = b.completion_fraction(number(value(args, &mut i, flag)?, flag)?);
            }
            "--latency" => {
                let v = value(args, &mut i, flag)?;
                let l = match (v.strip_prefix("exp:"), v.split_once("..")) {
                    (Some(mean), _) => Latency::exponential(duration(mean)?),
                    (None, Some((lo, hi))) => Latency::uniform(duration(lo)?, duration(hi)?),
                    (None, None) => Latency::fixed(duration(v)?),
                };
                b = b.latency(l);
            }
            "--stream-delay" => b = b.stream_chunk_delay(duration(value(args, &mut i, flag)?)?),
            "--fault" => b = b.fault(fault(value(args, &mut i, flag)?)?),
            "--seed" => b = b.seed(number(value(args, &mut i, flag)?, flag)?),
            "--port" => port = number(value(args, &mut i, flag)?, flag)?,
            other => return Err(format!("unknown option {other:?}")),
        }
        i += 1;
    }
    Ok((b, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_build_the_configured_mock() {
        let (b, port) = parse(&args(
            "--dialect anthropic --tier 1 --tpm 10000 --otpm 500 --concurrency 2 --queue \
             --latency 10ms..20ms --fault 503:0.25 --fault latency=1s --port 8089",
        ))
        .unwrap();
        let mock = b.build().unwrap();
        assert_eq!(port, 8089);
        assert_eq!(mock.dialect(), Dialect::Anthropic);
        let l = mock.limits();
        assert_eq!(
            (l.rpm, l.tpm, l.otpm, l.concurrency),
            (Some(500), Some(10_000), Some(500), Some(2))
        );
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        assert!(parse(&args("--rpm")).unwrap_err().contains("needs a value"));
        assert!(
            parse(&args("--rpm x"))
                .unwrap_err()
                .contains("not a valid number")
        );
        assert!(
            parse(&args("--dialect foo"))
                .unwrap_err()
                .contains("unknown dialect")
        );
        assert!(
            parse(&args("--fault 418x"))
                .unwrap_err()
                .contains("unknown kind")
        );
        assert!(
            parse(&args("--bogus"))
                .unwrap_err()
                .contains("unknown option")
        );
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
    }
}
