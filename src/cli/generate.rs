//! The man page and the shell completions, generated from the clap definition so
//! that they can't drift from `--help`. Packagers install what `phasebox generate
//! man|bash|zsh|fish` prints.

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

use crate::cli::{self, Artifact};

/// Print `artifact` to stdout.
pub fn print(artifact: Artifact) -> Result<()> {
    let text = render(artifact).context("rendering it from the clap definition")?;
    io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout")
}

pub fn render(artifact: Artifact) -> io::Result<String> {
    match artifact {
        Artifact::Man => man_page(),
        Artifact::Bash => Ok(completion(Shell::Bash)),
        Artifact::Zsh => Ok(completion(Shell::Zsh)),
        Artifact::Fish => Ok(completion(Shell::Fish)),
    }
}

fn completion(shell: Shell) -> String {
    let mut command = cli::command();
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

/// One of clap_mangen's section renderers.
type Section = fn(&Man, &mut dyn Write) -> io::Result<()>;

/// A single page, phasebox(1), with a section per subcommand: `man phasebox` then
/// shows `run`'s flags and exit statuses, which a page per subcommand would hide
/// behind phasebox-run(1).
fn man_page() -> io::Result<String> {
    // Like clap_mangen's own generate_to: `phasebox help` needs no documentation.
    let mut command = cli::command().disable_help_subcommand(true);
    command.build();
    let top = Man::new(command.clone());
    let mut page = preamble();
    let top_sections: [Section; 5] = [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ];
    for section in top_sections {
        page += &rendered(&top, section)?;
    }
    // In --help's order: cli::command() re-appends the subcommands it changes.
    let mut subcommands: Vec<_> =
        command.get_subcommands().filter(|subcommand| !subcommand.is_hide_set()).collect();
    subcommands.sort_by_key(|subcommand| subcommand.get_display_order());
    for subcommand in subcommands {
        page += &subcommand_section(subcommand)?;
    }
    page += &body(&see_also());
    Ok(page)
}

/// `subcommand` as one section of the page, with its synopsis, description, options
/// and text after the options as subsections.
fn subcommand_section(subcommand: &clap::Command) -> io::Result<String> {
    let man = Man::new(subcommand.clone());
    let name = subcommand.get_bin_name().unwrap_or_else(|| subcommand.get_name());
    let mut heading = Roff::new();
    heading.control("SH", [name.to_uppercase().as_str()]);
    let mut section = body(&heading);
    let subsections: [Section; 3] =
        [Man::render_synopsis_section, Man::render_description_section, Man::render_options_section];
    for subsection in subsections {
        section += &demoted(&rendered(&man, subsection)?);
    }
    section += &body(&after_help(subcommand));
    Ok(section)
}

/// The text after a subcommand's options (for `run`: the properties `-p` accepts and
/// the exit statuses): a subsection per paragraph that starts with a "Heading:"
/// line. Lines laid out as `  TERM   MEANING` become a list, so that the man
/// reader can reflow them; other lines are text.
fn after_help(subcommand: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    let Some(text) = subcommand.get_after_long_help().or_else(|| subcommand.get_after_help()) else {
        return roff;
    };
    for paragraph in text.to_string().split("\n\n") {
        let mut lines = paragraph.lines().peekable();
        match lines.peek().and_then(|first| first.strip_suffix(':')) {
            Some(heading) => {
                roff.control("SS", [heading]);
                lines.next();
            }
            None => {
                roff.control("PP", []);
            }
        }
        for line in lines {
            let entry = line.strip_prefix("  ").filter(|rest| !rest.starts_with(' '));
            match entry.and_then(|entry| entry.split_once("  ")) {
                Some((term, meaning)) => {
                    roff.control("TP", []);
                    roff.text([roman(term)]);
                    roff.text([roman(meaning.trim_start())]);
                }
                None => {
                    roff.text([roman(line.trim_start())]);
                }
            }
        }
    }
    roff
}

fn see_also() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemd-run(1), systemd.resource-control(5), systemd.exec(5), unshare(1), namespaces(7), \
         make.conf(5)",
    )]);
    roff
}

/// What `section` renders of `man`, without the preamble that roff writes before
/// every document (the page has it once, at the top).
fn rendered(man: &Man, section: Section) -> io::Result<String> {
    let mut out = Vec::new();
    section(man, &mut out)?;
    Ok(without_preamble(&String::from_utf8_lossy(&out)))
}

fn body(roff: &Roff) -> String {
    without_preamble(&roff.render())
}

fn without_preamble(text: &str) -> String {
    text.strip_prefix(&preamble()).unwrap_or(text).to_owned()
}

/// The definitions roff puts at the top of a document (an apostrophe that stays one).
fn preamble() -> String {
    Roff::new().render()
}

/// Sections turned into subsections: roff escapes text lines that start with a dot,
/// so every line starting with ".SH " is a heading.
fn demoted(section: &str) -> String {
    section
        .lines()
        .map(|line| match line.strip_prefix(".SH ") {
            Some(heading) => format!(".SS {heading}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The visible subcommands and, for each, the long flags a user can type.
    fn visible_flags() -> Vec<(String, Vec<String>)> {
        let mut command = cli::command().disable_help_subcommand(true);
        command.build();
        command
            .get_subcommands()
            .filter(|subcommand| !subcommand.is_hide_set())
            .map(|subcommand| {
                let flags = subcommand
                    .get_arguments()
                    .filter(|argument| !argument.is_hide_set())
                    .filter_map(|argument| argument.get_long())
                    .map(str::to_owned)
                    .collect();
                (subcommand.get_name().to_owned(), flags)
            })
            .collect()
    }

    /// The page as its reader sees the words: control lines and roff's escapes
    /// gone, white space collapsed.
    fn reader_text(page: &str) -> String {
        let text: Vec<&str> = page.lines().filter(|line| !line.starts_with('.')).collect();
        let text = text
            .join(" ")
            .replace(r"\fB", "")
            .replace(r"\fI", "")
            .replace(r"\fR", "")
            .replace(r"\*(Aq", "'")
            .replace(r"\-", "-")
            .replace(r"\\", r"\");
        collapsed(&text)
    }

    fn collapsed(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// `word` occurs in `text` as a whole word: `--property` is not found in `--properties`.
    fn has_word(text: &str, word: &str) -> bool {
        text.match_indices(word).any(|(at, _)| {
            let after = text[at + word.len()..].chars().next();
            !after.is_some_and(|next| next.is_alphanumeric() || next == '-' || next == '_')
        })
    }

    /// The part of the page under `.SH "PHASEBOX NAME"`, up to the next section.
    fn section<'a>(page: &'a str, name: &str) -> &'a str {
        let heading = format!(".SH \"PHASEBOX {}\"\n", name.to_uppercase());
        let (_, rest) = page.split_once(&heading).unwrap_or_else(|| panic!("no section for {name}"));
        rest.split("\n.SH ").next().unwrap()
    }

    /// The long flags that a part of the page lists: words starting with "--" on
    /// each term line after `.TP`.
    fn listed_flags(part: &str) -> Vec<String> {
        let lines: Vec<&str> = part.lines().collect();
        lines
            .windows(2)
            .filter(|pair| pair[0] == ".TP")
            .flat_map(|pair| {
                let term = reader_text(pair[1]);
                term.split([' ', ',', '='])
                    .filter_map(|word| word.strip_prefix("--"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn man_page_documents_every_flag_of_every_subcommand() {
        let page = render(Artifact::Man).unwrap();
        let subcommands = visible_flags();
        let run = subcommands.iter().find(|(name, _)| name == "run").expect("run is visible");
        assert!(run.1.contains(&"mode".to_owned()) && run.1.contains(&"property".to_owned()));
        for (name, flags) in &subcommands {
            let listed = listed_flags(section(&page, name));
            for flag in flags {
                assert!(listed.contains(flag), "{name} --{flag} is not in the man page's list: {listed:?}");
            }
        }
    }

    #[test]
    fn man_page_documents_the_exit_statuses() {
        let page = reader_text(&render(Artifact::Man).unwrap());
        let (heading, statuses) = cli::EXIT_STATUS_HELP.split_once('\n').unwrap();
        assert!(
            render(Artifact::Man).unwrap().contains(&format!(".SS \"{}\"", heading.trim_end_matches(':')))
        );
        assert!(page.contains(&collapsed(statuses)), "{page}");
    }

    #[test]
    fn man_page_leaves_internal_subcommands_out() {
        let page = render(Artifact::Man).unwrap();
        assert!(!page.contains("__inner") && !page.contains("generate"), "{page}");
    }

    #[test]
    fn man_page_is_valid_roff_with_one_preamble() {
        let page = render(Artifact::Man).unwrap();
        assert!(page.starts_with(&preamble()));
        assert_eq!(page.matches(&preamble()).count(), 1);
        assert_eq!(page.lines().filter(|line| line.starts_with(".TH ")).count(), 1);
    }

    #[test]
    fn completions_offer_every_subcommand_and_flag() {
        for (artifact, shell) in
            [(Artifact::Bash, Shell::Bash), (Artifact::Zsh, Shell::Zsh), (Artifact::Fish, Shell::Fish)]
        {
            let script = render(artifact).unwrap();
            for (name, flags) in visible_flags() {
                let offered = match shell {
                    Shell::Bash => format!("cmd=\"phasebox__subcmd__{name}\""),
                    Shell::Zsh => format!("({name})"),
                    _ => format!("-a \"{name}\""),
                };
                assert!(script.contains(&offered), "{shell}: no subcommand {name}");
                for flag in flags {
                    let completed = match shell {
                        Shell::Bash => has_word(&script, &format!(" --{flag}")),
                        Shell::Zsh => {
                            script.contains(&format!("--{flag}[")) || script.contains(&format!("--{flag}=["))
                        }
                        _ => has_word(&script, &format!("-l {flag}")),
                    };
                    assert!(completed, "{shell}: no {name} --{flag}");
                }
            }
        }
    }
}
