"""Every hand-written module stays small enough to read in one sitting: at most 400 lines a
file and 50 a function or method, for the Python under lclusterd/ and lclient/ (not
lclusterd/rpc/, which protoc generates) and the job init's C (lclusterd/runtime/jobinit/).
A function is counted from the line that names it (a Python def, without its decorators)
to its last line."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "lclusterd" / "rpc"
JOBINIT = ROOT / "lclusterd" / "runtime" / "jobinit"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 50


def python_files() -> list[Path]:
    return [path for package in ("lclusterd", "lclient") for path in sorted((ROOT / package).rglob("*.py"))
            if not path.is_relative_to(GENERATED)]


def c_files() -> list[Path]:
    return sorted(path for path in JOBINIT.iterdir() if path.suffix in (".c", ".h"))


def python_functions(source: str) -> Iterator[tuple[str, int, int]]:
    """(name, first line, last line) of every function and method, nested ones included
    (named Class.method, outer.inner)."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child.lineno, child.end_lineno
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)
    yield from walk(ast.parse(source), "")


# Comments, then string and char literals: whichever starts first wins, so a quote in a
# comment or a "/*" in a string is taken as what it is in.
C_NOT_CODE = re.compile(r"""/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'""", re.S)
C_DIRECTIVE = re.compile(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", re.M)  # with its continuation lines


def c_code(source: str) -> str:
    """The source with comments, literals and preprocessor lines blanked, newlines kept: what
    is left of its braces are the code's (a #define may hold unbalanced ones)."""
    def blank(match: re.Match) -> str:
        return re.sub(r"[^\n]", " ", match.group())
    return C_DIRECTIVE.sub(blank, C_NOT_CODE.sub(blank, source))


def c_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, last line) of every top-level function definition: a '{' outside
    any other whose declaration ends in a parameter list and has no '=' (a struct or an
    initializer does not), from the line of the name before that list to the matching '}'."""
    code, found, depth, declaration, current = c_code(source), [], 0, 0, None
    line_of = lambda index: code.count("\n", 0, index) + 1  # noqa: E731
    for index, char in enumerate(code):
        if char == "{":
            text = code[declaration:index].rstrip()
            if depth == 0 and text.endswith(")") and "=" not in text:
                name = re.search(r"(\w+)\s*$", text[:matching_open_paren(text)])
                current = (name.group(1), line_of(declaration + name.start(1)))
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0 and current:
                found.append((*current, line_of(index)))
                current = None
        if depth == 0 and char in ";}":
            declaration = index + 1
    return found


def matching_open_paren(text: str) -> int:
    """Where the '(' that the ')' ending text closes is."""
    depth = 0
    for index in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in {text!r}")


def offenders(files: list[Path], functions) -> list[str]:
    found = []
    for path in files:
        source = path.read_text()
        where = path.relative_to(ROOT)
        lines = len(source.splitlines())
        if lines > MAX_FILE_LINES:
            found.append(f"{where}: {lines} lines (at most {MAX_FILE_LINES})")
        for name, first, last in functions(source):
            if last - first + 1 > MAX_FUNCTION_LINES:
                found.append(f"{where}:{first}: {name} is {last - first + 1} lines (at most {MAX_FUNCTION_LINES})")
    return found


def test_python_modules_and_their_functions_are_small():
    too_big = offenders(python_files(), python_functions)
    assert not too_big, "too big:\n" + "\n".join(too_big)


def test_the_job_inits_c_files_and_their_functions_are_small():
    too_big = offenders(c_files(), c_functions)
    assert not too_big, "too big:\n" + "\n".join(too_big)


def test_the_files_measured_are_the_hand_written_ones():
    names = {str(path.relative_to(ROOT)) for path in python_files()}
    assert {"lclusterd/daemon.py", "lclusterd/runtime/plan.py", "lclient/cli.py"} <= names
    assert not any(name.startswith("lclusterd/rpc/") for name in names)
    assert {path.name for path in c_files()} >= {"jobinit.c", "jobinit.h", "seccomp.c"}


def test_the_c_function_finder_counts_only_the_codes_braces():
    source = """#define BRACES(x) {#x, sizeof #x}
/* a comment's { and a quote: it's */
struct pair {
    int a, b;
};
static const struct pair PAIRS[] = {{1, 2}, {3, 4}};

__attribute__((format(printf, 1, 2))) static int
say(const char *fmt, ...)
{
    char open = '{', quote = '\\'';  // a '}' here too
    return printf("}%c%c\\"{", open, quote);
}

int main(void) { return say("{"); }
"""
    assert c_functions(source) == [("say", 9, 13), ("main", 15, 15)]


def test_the_c_function_finder_finds_the_job_inits_functions():
    found = {name for path in c_files() for name, _, _ in c_functions(path.read_text())}
    ops = set(re.findall(r'\{"\w+", -?\d+, (op_\w+)\}', (JOBINIT / "jobinit.c").read_text()))  # the OPS table's
    assert len(ops) > 20 and ops <= found
    assert {"main", "run_plan", "receive_job", "find_command", "seccomp_compile", "emit_search"} <= found
