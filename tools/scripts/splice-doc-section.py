#!/usr/bin/env python3
"""Replaces the text between two marker lines of a Markdown file with a generated section
(benchmark scripts use it for docs/benchmarks.md). If the markers are missing, appends
`## <heading>` and the marked section at the end; a missing file starts as "# Benchmarks".

usage: splice-doc-section.py DOC SECTION_FILE BEGIN_MARKER END_MARKER HEADING
"""
import sys

doc, section_file, begin, end, heading = sys.argv[1:6]
section = open(section_file).read()
try:
    text = open(doc).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
if begin in text and end in text:
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    text = pre + begin + "\n" + section + end + post
else:
    text = text.rstrip("\n") + "\n\n## " + heading + "\n\n" + begin + "\n" + section + end + "\n"
open(doc, "w").write(text)
