use super::*;

// ---- Issue 23, the design: the console at 1280 and 1920 px wide, light and dark ----

/// What the reviewed user did at `at_s` seconds: typed `typed` (or pressed `key`) into
/// `window` of `app`, after `prompt` in a terminal; the screen then showed `output` too.
pub(super) struct Step {
    at_s: i64,
    app: &'static str,
    window: &'static str,
    prompt: &'static str,
    typed: &'static str,
    key: &'static str,
    output: &'static [&'static str],
}

const TERM: &str = "gnome-terminal";
const ROOT: &str = "root@db-prod-01:~# ";
const ROOT_WINDOW: &str = "root@db-prod-01: ~";
/// The frames captured in these seconds are dropped by the agent (a gap record says so); the
/// keystrokes of that time are kept.
const DROPPED_S: std::ops::RangeInclusive<i64> = 60..=90;
/// The recording's length.
const SESSION_S: i64 = 170;

const fn step(
    at_s: i64,
    prompt: &'static str,
    typed: &'static str,
    output: &'static [&'static str],
) -> Step {
    Step {
        at_s,
        app: TERM,
        window: ROOT_WINDOW,
        prompt,
        typed,
        key: "",
        output,
    }
}

/// A database fix over SSH, and a note in the ticket.
pub(super) const STEPS: &[Step] = &[
    Step {
        window: "rita@ts-01: ~",
        ..step(
            6,
            "rita@ts-01:~$ ",
            "ssh db-prod-01",
            &[
                "Welcome to Ubuntu 24.04.1 LTS (GNU/Linux 6.8.0-49-generic x86_64)",
                "Last login: Thu Dec  3 16:41:07 2026 from 10.20.4.31",
            ],
        )
    },
    Step {
        window: "rita@db-prod-01: ~",
        ..step(14, "rita@db-prod-01:~$ ", "sudo -i", &[])
    },
    step(
        23,
        ROOT,
        "systemctl status postgresql@16-main",
        &[
            "* postgresql@16-main.service - PostgreSQL Cluster 16-main",
            "     Loaded: loaded (/usr/lib/systemd/system/postgresql@.service; enabled-runtime)",
            "     Active: active (running) since Mon 2026-11-30 06:12:44 UTC; 5 days ago",
            "   Main PID: 1187 (postgres)",
        ],
    ),
    step(
        38,
        ROOT,
        "tail -f /var/log/postgresql/postgresql-16-main.log",
        &[
            "2026-12-05 04:51:02 UTC [1187] LOG:  checkpoint starting: time",
            "2026-12-05 04:52:40 UTC [2231] WARNING:  replication lag 412 s on db-prod-02",
            "2026-12-05 04:53:11 UTC [2231] WARNING:  replication lag 443 s on db-prod-02",
        ],
    ),
    Step {
        key: "ctrl+c",
        ..step(49, ROOT, "", &["^C"])
    },
    step(
        55,
        ROOT,
        "psql -U billing billing",
        &[
            "psql (16.4 (Ubuntu 16.4-1.pgdg24.04+1))",
            "Type \"help\" for help.",
        ],
    ),
    step(
        63,
        "billing=> ",
        "SELECT client_addr, replay_lag FROM pg_stat_replication;",
        &[
            " client_addr |   replay_lag",
            "-------------+-----------------",
            " 10.20.7.12  | 00:07:31.208114",
            "(1 row)",
        ],
    ),
    step(76, "billing=> ", "\\q", &[]),
    step(84, ROOT, "systemctl restart postgresql@16-main", &[]),
    step(
        97,
        ROOT,
        "systemctl is-active postgresql@16-main",
        &["active"],
    ),
    Step {
        app: "firefox",
        window: "INC-2231 Replication lag on db-prod-02 - Jira - Mozilla Firefox",
        ..step(
            118,
            "",
            "Restarted postgresql on db-prod-01 at 05:14 UTC; replica lag back to 0 s.",
            &[],
        )
    },
    step(146, ROOT, "exit", &["logout"]),
    Step {
        window: "rita@db-prod-01: ~",
        ..step(
            152,
            "rita@db-prod-01:~$ ",
            "exit",
            &["logout", "Connection to db-prod-01 closed."],
        )
    },
];

/// The screens the agent captured of STEPS: (capture second, screen for `DRAW_SCREENS`), one
/// at the start and one after each step.
fn screens(t0_us: i64) -> Vec<(i64, serde_json::Value)> {
    let clock = |s: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp((t0_us / 1_000_000) + s).unwrap();
        format!("{:02}:{:02}", t.hour(), t.minute())
    };
    let mut term: Vec<(String, String)> = vec![("rita@ts-01:~$ ".into(), String::new())];
    let mut out = vec![(
        0,
        json!({"app": TERM, "window": "rita@ts-01: ~", "clock": clock(0), "lines": term}),
    )];
    for (i, s) in STEPS.iter().enumerate() {
        if s.app != TERM {
            out.push((
                s.at_s,
                json!({"app": s.app, "window": s.window, "clock": clock(s.at_s), "lines": [["", s.typed]]}),
            ));
            continue;
        }
        // The ready prompt the last screen ended with becomes this step's command line.
        if term.last().is_some_and(|l| l.1.is_empty()) {
            term.pop();
        }
        if !s.typed.is_empty() {
            term.push((s.prompt.into(), s.typed.into()));
        }
        term.extend(s.output.iter().map(|l| (String::new(), (*l).to_owned())));
        let next = STEPS[i + 1..].iter().find(|n| n.app == TERM);
        term.push((
            next.map_or("rita@ts-01:~$ ", |n| n.prompt).into(),
            String::new(),
        ));
        out.push((
            s.at_s,
            json!({"app": TERM, "window": s.window, "clock": clock(s.at_s), "lines": term}),
        ));
    }
    out
}

/// Draws each screen (a terminal, or a browser with a ticket) on a 1280×720 canvas in the
/// browser and returns the PNGs, base64.
const DRAW_SCREENS: &str = r#"
const sans = '"Liberation Sans", Arial, sans-serif';
return arguments[0].map((s) => {
  const W = 1280, H = 720, c = document.createElement('canvas');
  c.width = W; c.height = H;
  const g = c.getContext('2d');
  const bg = g.createLinearGradient(0, 0, W, H);
  bg.addColorStop(0, '#2a4468'); bg.addColorStop(1, '#121a2a');
  g.fillStyle = bg; g.fillRect(0, 0, W, H);
  g.fillStyle = '#0b0d10'; g.fillRect(0, 0, W, 26);
  g.fillStyle = '#e5e7eb'; g.font = `13px ${sans}`; g.fillText('Activities', 12, 18);
  g.textAlign = 'center'; g.fillText(s.clock, W / 2, 18); g.textAlign = 'left';
  const x = 64, y = 50, w = 1152, h = 646, term = s.app === 'gnome-terminal';
  g.fillStyle = 'rgba(0,0,0,.45)'; g.fillRect(x + 8, y + 10, w, h);
  g.fillStyle = term ? '#2f2f2f' : '#f0f0f4'; g.fillRect(x, y, w, 36);
  g.fillStyle = term ? '#e8e8e8' : '#1f2328'; g.font = `bold 13px ${sans}`; g.textAlign = 'center';
  g.fillText(s.window, x + w / 2, y + 23); g.textAlign = 'left';
  ['#ff5f57', '#febc2e', '#28c840'].forEach((col, i) => {
    g.fillStyle = col; g.beginPath(); g.arc(x + w - 66 + i * 20, y + 18, 6, 0, 7); g.fill();
  });
  if (term) {
    g.fillStyle = '#1d1f21'; g.fillRect(x, y + 36, w, h - 36);
    g.font = '15px "DejaVu Sans Mono", monospace';
    const lines = s.lines.slice(-27);
    lines.forEach(([prompt, text], i) => {
      const ly = y + 64 + i * 21;
      g.fillStyle = '#8ae234'; g.fillText(prompt, x + 16, ly);
      const px = x + 16 + g.measureText(prompt).width;
      g.fillStyle = prompt ? '#f5f5f5' : '#b8bcb8'; g.fillText(text, px, ly);
      if (i === lines.length - 1) { g.fillStyle = '#d0d0d0'; g.fillRect(px + g.measureText(text).width + 2, ly - 14, 9, 18); }
    });
  } else {
    g.fillStyle = '#ffffff'; g.fillRect(x, y + 36, w, h - 36);
    g.fillStyle = '#f9f9fb'; g.fillRect(x, y + 36, w, 42);
    g.fillStyle = '#e4e4ea'; g.beginPath(); g.roundRect(x + 80, y + 44, w - 160, 26, 13); g.fill();
    g.fillStyle = '#45474d'; g.font = `14px ${sans}`; g.fillText('jira.example.internal/browse/INC-2231', x + 100, y + 62);
    g.fillStyle = '#0c66e4'; g.fillRect(x, y + 78, w, 46);
    g.fillStyle = '#ffffff'; g.font = `bold 18px ${sans}`; g.fillText('Jira', x + 24, y + 108);
    g.font = `14px ${sans}`; g.fillText('Projects    Filters    Dashboards', x + 90, y + 107);
    g.fillStyle = '#172b4d'; g.font = `bold 24px ${sans}`; g.fillText('INC-2231  Replication lag on db-prod-02', x + 40, y + 174);
    g.fillStyle = '#44546f'; g.font = `14px ${sans}`;
    g.fillText('Status: IN PROGRESS     Priority: High     Assignee: rita     Reporter: monitoring', x + 40, y + 206);
    ['Replica db-prod-02 fell 7 minutes behind db-prod-01 at 04:52 UTC.',
     'Billing exports read from the replica and are stale until it catches up.']
      .forEach((l, i) => { g.fillStyle = '#172b4d'; g.font = `15px ${sans}`; g.fillText(l, x + 40, y + 250 + i * 24); });
    g.fillStyle = '#44546f'; g.font = `bold 14px ${sans}`; g.fillText('Add a comment', x + 40, y + 330);
    g.strokeStyle = '#0c66e4'; g.lineWidth = 2; g.strokeRect(x + 40, y + 342, w - 80, 110);
    g.fillStyle = '#172b4d'; g.font = `15px ${sans}`; g.fillText(s.lines[0][1], x + 54, y + 372);
    g.fillStyle = '#0c66e4'; g.beginPath(); g.roundRect(x + 40, y + 466, 72, 32, 4); g.fill();
    g.fillStyle = '#ffffff'; g.font = `bold 14px ${sans}`; g.fillText('Save', x + 59, y + 487);
  }
  return c.toDataURL('image/png').split(',')[1];
});
"#;

/// Record STEPS as ts-01 would (frames drawn by the browser `page`, keystrokes with their
/// window), with the frames of DROPPED_S dropped and a gap record in their place.
pub(super) async fn record_steps(op: &Operator<'_>, page: &Page, t0_us: i64) {
    use base64ct::Encoding;
    let shown = screens(t0_us);
    let pngs = page
        .c
        .execute(
            DRAW_SCREENS,
            vec![json!(shown.iter().map(|s| &s.1).collect::<Vec<_>>())],
        )
        .await
        .unwrap();
    let mut w = op.start("ts-01");
    let mut chunks = Vec::new();
    let mut dropped: Vec<(u64, i64)> = Vec::new();
    let mut head = None;
    let mut gaps = Vec::new();
    for (n, ((at_s, _), png)) in shown.iter().zip(pngs.as_array().unwrap()).enumerate() {
        let image = base64ct::Base64::decode_vec(png.as_str().unwrap()).unwrap();
        let at = t0_us + at_s * 1_000_000 + 800_000;
        let lost = DROPPED_S.contains(at_s);
        if lost && dropped.is_empty() {
            head = w.frames.chain_head();
        }
        if !lost && !dropped.is_empty() {
            // What the agent does when its spool is full: the chain goes back to before the
            // dropped chunks, and a gap record says which they were.
            w.frames.rewind_chain(head.unwrap());
            let gap = sealstream::protocol::payload::Gap {
                first_seq: dropped[0].0,
                last_seq: dropped[dropped.len() - 1].0,
                first_capture_us: dropped[0].1,
                last_capture_us: dropped[dropped.len() - 1].1,
                count: dropped.len() as u64,
            };
            let record = w.frames.seal_gap(&gap).unwrap();
            gaps.push((record.header.seq, gap.first_seq));
            chunks.push(record);
            dropped.clear();
        }
        let name = format!("screen-{n:03}.png");
        let frame = Frame {
            name: &name,
            image: &image,
        }
        .encode();
        let chunk = w.frames.seal(&frame, at, false).unwrap();
        if lost {
            dropped.push((chunk.header.seq, at));
        } else {
            chunks.push(chunk);
        }
    }
    let end = t0_us + SESSION_S * 1_000_000;
    chunks.push(w.frames.seal(&[], end, true).unwrap());
    for s in STEPS {
        let mut e = json!({"ts": t0_us / 1000 + s.at_s * 1000, "app": s.app, "window": s.window});
        if s.key.is_empty() {
            e["text"] = json!(s.typed);
        } else {
            e["key"] = json!(s.key);
        }
        let line = format!("{e}\n");
        chunks.push(
            w.keys
                .seal(line.as_bytes(), t0_us + s.at_s * 1_000_000, false)
                .unwrap(),
        );
    }
    chunks.push(w.keys.seal(&[], end, true).unwrap());
    op.commit(&mut w, &chunks, &gaps).await;
}
