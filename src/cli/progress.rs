//! What a person sees while a command waits: a status line on stderr, redrawn in
//! place with a spinner and the time waited when stderr is a terminal, and printed
//! as a plain line each time it changes otherwise (logs and pipes get no control
//! characters). Output lines (timeline events) go through [`Progress::println`] so
//! they never mix with the status line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Where an output line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    Stdout,
    Stderr,
}

/// A status line for a wait.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    status: String,
    /// The status last printed as a plain line (non-terminal mode), without detail.
    printed: String,
    started: Instant,
    frame: usize,
    /// When the spinner last moved.
    ticked: Instant,
    /// A status line is on the screen and must be cleared before other output.
    drawn: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A status line on stderr, redrawn in place if stderr is a terminal.
    pub fn new() -> Self {
        Self::with_terminal(std::io::stderr().is_terminal())
    }

    pub fn with_terminal(tty: bool) -> Self {
        Self {
            tty,
            status: String::new(),
            printed: String::new(),
            started: Instant::now(),
            frame: 0,
            ticked: Instant::now(),
            drawn: false,
        }
    }

    /// How often [`Progress::tick`] should run.
    pub fn interval() -> Duration {
        Duration::from_millis(120)
    }

    /// Sets what is being waited for.
    pub fn status(&mut self, text: impl Into<String>) {
        self.set(text, "");
    }

    /// Sets what is being waited for and a detail that changes often (a count):
    /// on a terminal both show; otherwise a line is printed only when `text`
    /// changes, so logs get one line per change of state.
    pub fn set(&mut self, text: impl Into<String>, detail: impl Into<String>) {
        let text = text.into();
        let detail = detail.into();
        let line = if detail.is_empty() {
            text.clone()
        } else {
            format!("{text} · {detail}")
        };
        if line == self.status {
            return;
        }
        self.status = line;
        if self.tty {
            self.draw();
        } else if text != self.printed {
            eprintln!("  … {text}");
            self.printed = text;
        }
    }

    /// Advances the spinner and the time shown (terminal only); calls closer
    /// together than [`Progress::interval`] do nothing.
    pub fn tick(&mut self) {
        if self.tty && !self.status.is_empty() && self.ticked.elapsed() >= Self::interval() {
            self.ticked = Instant::now();
            self.frame = (self.frame + 1) % FRAMES.len();
            self.draw();
        }
    }

    fn draw(&mut self) {
        // The time first: a line cut at the terminal's width loses only its tail.
        let secs = self.started.elapsed().as_secs_f64();
        let line = format!(
            "{} {:>6}  {}",
            FRAMES[self.frame],
            if secs < 60.0 {
                format!("{secs:.1} s")
            } else {
                format!("{}m{:02}s", secs as u64 / 60, secs as u64 % 60)
            },
            self.status
        );
        let width = terminal_width();
        let line: String = line.chars().take(width.saturating_sub(1)).collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    /// Prints an output line above the status line.
    pub fn println(&mut self, out: Out, line: &str) {
        self.clear();
        match out {
            Out::Stdout => {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            }
            Out::Stderr => eprintln!("{line}"),
        }
        if self.tty && !self.status.is_empty() {
            self.draw();
        }
    }

    /// Removes the status line: the wait is over.
    pub fn finish(&mut self) {
        self.clear();
        self.status.clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The terminal's width from `COLUMNS`, else 80 (asking the terminal takes an ioctl,
/// and a shorter line is harmless while a wrapped one would leave debris).
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&w: &usize| w >= 20)
        .unwrap_or(80)
}
