//! The machine as a picture (`show --svg FILE`): an address map is read faster than a
//! tree. Each PHB is a box; each PE a row with its group, owner and EEH state; each
//! window an address bar scaled to its own size, with its mapped runs filled in, the
//! bypass window drawn as one bar over RAM, and every DMA fault of the run marked where
//! it struck (a fault outside every window is listed under the PE). A pSeries guest is
//! drawn the same way, PHB by PHB, one bar per enabled LIOBN window.

use spapr_platform::{PhbView, Tve1, BYPASS_BASE};
use std::fmt::Write as _;

/// What the picture needs of a PE beyond its view: its EEH state and the faults its
/// devices took (bus addresses).
#[derive(Clone, Debug, Default)]
pub struct PeExtras {
    /// `eeh_pe_get_state`'s value (0: normal).
    pub eeh_state: i64,
    /// Bus addresses of the DMA faults its devices took during the run.
    pub faults: Vec<u64>,
}

/// Width of the drawing and of an address bar, in pixels.
const WIDTH: u32 = 1000;
const BAR_X: u32 = 190;
const BAR_W: u32 = 780;
const ROW: u32 = 22;

/// Escapes text for XML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Pixel offset of bus address `a` in a bar over `[start, start + size)`.
fn px(a: u64, start: u64, size: u64) -> f64 {
    let off = a.saturating_sub(start).min(size) as f64;
    f64::from(BAR_W) * off / (size.max(1) as f64)
}

struct Canvas {
    body: String,
    y: u32,
}

impl Canvas {
    /// An empty drawing with its title.
    fn new(title: &str) -> Self {
        let mut c = Canvas {
            body: String::new(),
            y: 10,
        };
        c.text(10, "title", title);
        c.y += ROW + 6;
        c
    }

    /// Starts a PHB's box with its heading; where it starts, for [`Canvas::close_box`].
    fn open_box(&mut self, heading: &str) -> u32 {
        let top = self.y;
        self.y += 4;
        self.text(10, "phb", heading);
        self.y += ROW;
        top
    }

    /// Draws the box begun at `top` around what was drawn since.
    fn close_box(&mut self, top: u32) {
        let _ = writeln!(
            self.body,
            r#"<rect x="4" y="{top}" width="{}" height="{}" class="phb-box"/>"#,
            WIDTH - 8,
            self.y - top
        );
        self.y += 10;
    }

    fn text(&mut self, x: u32, class: &str, s: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x}" y="{}" class="{class}">{}</text>"#,
            self.y + 15,
            esc(s)
        );
    }

    /// One address bar: `label` on the left, the window `[start, start+size)`, the
    /// filled `runs` (start, length in bytes), and `faults` marked.
    fn bar(
        &mut self,
        label: &str,
        class: &str,
        start: u64,
        size: u64,
        runs: &[(u64, u64)],
        faults: &[u64],
    ) {
        self.text(10, "label", label);
        let y = self.y + 3;
        let _ = writeln!(
            self.body,
            r#"<rect x="{BAR_X}" y="{y}" width="{BAR_W}" height="14" class="{class}"><title>{}</title></rect>"#,
            esc(&format!("{start:#x}+{size:#x}"))
        );
        // Runs closer than a pixel are drawn as one rectangle, so a bar holds at most
        // about one rectangle per pixel whatever the number of runs.
        let mut merged: Vec<(f64, f64, u64, u64, usize)> = Vec::new();
        for &(a, len) in runs {
            let x0 = px(a, start, size);
            let x1 = px(a.saturating_add(len), start, size).max(x0 + 1.0);
            match merged.last_mut() {
                Some(m) if x0 <= m.1 + 0.5 => {
                    m.1 = m.1.max(x1);
                    m.3 = a.saturating_add(len);
                    m.4 += 1;
                }
                _ => merged.push((x0, x1, a, a.saturating_add(len), 1)),
            }
        }
        for (x0, x1, a, end, n) in merged {
            let what = if n == 1 {
                format!("mapped {a:#x}..{end:#x}")
            } else {
                format!("mapped {a:#x}..{end:#x} ({n} runs)")
            };
            let _ = writeln!(
                self.body,
                r#"<rect x="{:.1}" y="{y}" width="{:.1}" height="14" class="mapped"><title>{}</title></rect>"#,
                f64::from(BAR_X) + x0,
                x1 - x0,
                esc(&what)
            );
        }
        for &f in faults {
            let x = f64::from(BAR_X) + px(f, start, size);
            let _ = writeln!(
                self.body,
                r#"<path d="M{x:.1} {} l-5 -8 h10 z" class="fault"><title>{}</title></path>"#,
                y,
                esc(&format!("DMA fault at {f:#x}"))
            );
        }
        self.y += ROW;
    }
}

/// Draws a PowerNV machine: `phbs` from `PowerNv::snapshot`, `extras(phb, pe)` for each
/// PE's EEH state and faults.
pub fn powernv(title: &str, phbs: &[PhbView], extras: &dyn Fn(u32, u32) -> PeExtras) -> String {
    let mut c = Canvas::new(title);
    for phb in phbs {
        let top = c.open_box(&format!(
            "PHB {} ({:?}, {})",
            phb.index, phb.model, phb.iommu
        ));
        for pe in &phb.pes {
            let x = extras(phb.index, pe.number);
            let owner = match pe.owner {
                Some(o) => format!("user {:#x}", o.0),
                None => "kernel".to_string(),
            };
            let eeh = match x.eeh_state {
                0 => String::new(),
                s => format!(", EEH state {s} (frozen)"),
            };
            let devices: Vec<&str> = pe.devices.iter().map(|d| d.0.as_str()).collect();
            c.text(
                20,
                if x.eeh_state == 0 { "pe" } else { "pe frozen" },
                &format!(
                    "PE {} {} [{}] owner {owner}{eeh}: {}",
                    pe.number,
                    pe.group.as_deref().unwrap_or("(no group)"),
                    pe.domain
                        .map_or("no domain".to_string(), |d| format!("{d:?}")),
                    devices.join(", ")
                ),
            );
            c.y += ROW;
            let mut placed = vec![false; x.faults.len()];
            for w in &pe.windows {
                let runs: Vec<(u64, u64)> = w
                    .runs
                    .iter()
                    // An absolute TCE index times the page size is its bus address.
                    .map(|r| {
                        (
                            r.first.0.saturating_mul(w.page_size),
                            r.count.saturating_mul(w.page_size),
                        )
                    })
                    .collect();
                let end = w.start.saturating_add(w.size);
                let inside: Vec<u64> = x
                    .faults
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| (w.start..end).contains(*f))
                    .map(|(i, f)| {
                        placed[i] = true;
                        *f
                    })
                    .collect();
                c.bar(
                    &format!(
                        "window {} TVE#{} {}",
                        w.num,
                        w.tve,
                        if w.kernel { "kernel" } else { "user" }
                    ),
                    if w.kernel {
                        "window kernel"
                    } else {
                        "window user"
                    },
                    w.start,
                    w.size,
                    &runs,
                    &inside,
                );
            }
            if let Tve1::Bypass { size } = pe.tve1 {
                let end = BYPASS_BASE.saturating_add(size);
                let inside: Vec<u64> = x
                    .faults
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| (BYPASS_BASE..end).contains(*f))
                    .map(|(i, f)| {
                        placed[i] = true;
                        *f
                    })
                    .collect();
                c.bar(
                    "bypass (TVE#1)",
                    "bypass",
                    BYPASS_BASE,
                    size,
                    &[(BYPASS_BASE, size)],
                    &inside,
                );
            }
            let stray: Vec<String> = x
                .faults
                .iter()
                .zip(&placed)
                .filter(|(_, p)| !**p)
                .map(|(f, _)| format!("{f:#x}"))
                .collect();
            if !stray.is_empty() {
                c.text(
                    30,
                    "fault-text",
                    &format!("faults outside every window: {}", stray.join(", ")),
                );
                c.y += ROW;
            }
        }
        c.close_box(top);
    }
    c.finish()
}

/// One guest PHB for [`pseries`]: its label and its enabled windows.
pub struct GuestPhb {
    /// "PHB 0 BUID ...".
    pub label: String,
    /// Its LIOBN windows.
    pub windows: Vec<GuestWindow>,
}

/// One enabled LIOBN window.
pub struct GuestWindow {
    /// "LIOBN 0x...".
    pub label: String,
    /// First bus address.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// Mapped runs: (bus address, bytes).
    pub runs: Vec<(u64, u64)>,
}

/// Draws a pSeries guest: each PHB a box, each enabled LIOBN window an address bar with
/// its mapped runs.
pub fn pseries(title: &str, phbs: &[GuestPhb]) -> String {
    let mut c = Canvas::new(title);
    for phb in phbs {
        let top = c.open_box(&phb.label);
        for w in &phb.windows {
            c.bar(&w.label, "window kernel", w.start, w.size, &w.runs, &[]);
        }
        c.close_box(top);
    }
    c.finish()
}

impl Canvas {
    /// The whole document.
    fn finish(self) -> String {
        let c = self;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" viewBox="0 0 {WIDTH} {}">"#,
            c.y + 10,
            c.y + 10
        );
        out.push_str(
            "<style>text{font:12px monospace}.title{font-weight:bold;font-size:14px}\
         .phb{font-weight:bold}.frozen{fill:#b00}.window{stroke:#555;fill:#eee}\
         .user{fill:#e6eefc}.kernel{fill:#eef7e6}.mapped{fill:#3a7}.bypass{fill:#9bd;stroke:#555}\
         .fault{fill:#d00}.fault-text{fill:#d00}.phb-box{fill:none;stroke:#999}</style>\n",
        );
        out.push_str(&c.body);
        out.push_str("</svg>\n");
        out
    }
}
