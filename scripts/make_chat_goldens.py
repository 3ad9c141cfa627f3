#!/usr/bin/env python3
"""Golden renders for smelt-text's chat templates (crates/text/tests/chat_template_golden.rs).

How to run (from the repository root):

    /tmp/refenv/v/bin/python scripts/make_chat_goldens.py

Needs: transformers==5.23.0, jinja2==3.1.6, gguf==0.19.0 (gguf-py), torch (CPU; transformers' GGUF
tokenizer loading imports it), numpy, sentencepiece; and the real models in ~/.cache/smelt/assets
(or $SMELT_ASSETS), fetched by scripts/fetch-assets.sh.

What it writes, under crates/text/tests/golden/chat/:
  templates/<name>.jinja   the template source, byte for byte. The two model templates are read out of
                           the GGUF files (`tokenizer.chat_template`) with gguf-py; the others are written
                           below to exercise the parts of HF's Jinja environment the model templates don't
                           (raise_exception, tojson options, Python string methods, whitespace control...).
  renders.json             for each (template, conversation, add_generation_prompt, extra kwargs): the
                           rendered string, or the error the template raised.
  strftime.json            naive-datetime strftime(fmt) of fixed and random UTC times: HF's `strftime_now` is
                           `datetime.now().strftime(fmt)` (local clock, naive); smelt formats UTC.

The model templates are rendered through the real path a user takes: a tokenizer loaded with
`AutoTokenizer.from_pretrained(dir, gguf_file=...)` and `tokenizer.apply_chat_template(..., tokenize=False)`.
The other templates go through `transformers.utils.chat_template_utils.render_jinja_template`, the same
machinery apply_chat_template calls, with bos/eos tokens passed like apply_chat_template passes them.
"""

import datetime
import json
import os
import random
import sys
from pathlib import Path

import gguf
import jinja2
import transformers
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "text" / "tests" / "golden" / "chat"
ASSETS = Path(os.environ.get("SMELT_ASSETS", Path.home() / ".cache" / "smelt" / "assets"))

MODEL_FILES = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}
NO_TEMPLATE_FILE = "stories260K.gguf"

# transformers' old `default_chat_template` (ChatML); smelt's ChatTemplate::fallback() renders exactly this.
CHATML_DEFAULT = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA2_STYLE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

GEMMA_STYLE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

LLAMA3_STYLE = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# trim_blocks / lstrip_blocks / keep_trailing_newline=False, comments, `{%+`, `{%-`, raw blocks.
WHITESPACE = r"""{% for message in messages %}
    {% if message.role == 'system' %}
<<{{ message.content | trim }}>>
    {% else %}
{{ message.role | upper }}: {{ message.content }}
    {% endif %}
    {# an indented comment #}
  {#- a trimming comment -#}
{% endfor %}
{%+ if add_generation_prompt %}
ASSISTANT:
{%- endif %}
  {{ '  a variable tag keeps its indent' }}
	{% if true %}tab-indented block{% endif %}
{% raw %}  {{ not a tag }}
{% endraw %}
end {{ messages | length }}

"""

# HF's own tojson filter: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
PYJSON = r"""{% set d = {'b': 1, 'a': [1.5, 2.0, none, true, false], 'ü': "q\"<&>'\\ \t\u0001\u007f", 'n': {}, 'e': []} %}
{{ messages | tojson }}
{{ messages | tojson(indent=2) }}
{{ messages[0] | tojson(indent=0) }}
{{ messages[-1] | tojson(indent='\t') }}
{{ d | tojson }}
{{ d | tojson(sort_keys=true) }}
{{ d | tojson(separators=(',', ':')) }}
{{ d | tojson(indent=2, separators=(',', ' = ')) }}
{{ d | tojson(ensure_ascii=true) }}
{{ d | tojson(true, 1) }}
{{ [1e20, 1e-5, 0.1, 1/3, 100.0, 1e16, 1e15, 123456.789e3, -0.0, 2.5e-300, 12345678901234567890, -42] | tojson }}
{{ messages | map(attribute='content') | list | tojson(ensure_ascii=true) }}
{{ {7: 'int key', 'x': 1} | tojson }} {{ "plain string" | tojson }} {{ 3 | tojson }} {{ none | tojson }} {{ true | tojson }}
"""

# Python's str() of values printed with {{ }}, and Python string methods (minijinja-contrib pycompat).
PYMETHODS = r"""{% for m in messages %}
[{{ m.content.strip() }}|{{ m.content.upper() }}|{{ m.content.lower() }}|{{ m.content.startswith('Hel') }}|{{ m.content.endswith('!') }}|{{ m.content.replace('l', 'L') }}|{{ m.role.title() }}|{{ m.role.capitalize() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip() }}|{{ m.content.count('a') }}|{{ m.content.find('o') }}]
{{ m.content.split() }} {{ m.content.split('\n') }} {{ m.content.strip().split(' ', 1) }}
{% endfor %}
{{ none }} {{ true }} {{ false }} {{ [1, 'a', "it's", 'say "hi"', 'both \' and "', none, true, 2.5, 'tab\there', 'nl\nx', 'back\\slash'] }}
{{ {'k': 'v', 'n': none, 'l': [false]} }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 7 // 2 }} {{ 7 / 2 }} {{ 2.0 }} {{ -0.0 }} {{ 1e-7 }} {{ 1e16 }} {{ 1e15 }}
{{ messages | map(attribute='role') | list }} {{ messages[0] }}
{{ 'a-b-c'.split('-') | join('+') }} {{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ 'Hello World'.lower().startswith('hello') }}
{{ 'ab\u001c '.strip() | length }} {{ 'héllo wörld'.rfind('ö') }} {{ 'héllo'.index('l') }} {{ 'héllo'.count('') }} {{ 'héllo'.count('l', 3) }} {{ 'héllo'.find('l', -2) }} {{ 'héllo'.find('x') }}
{{ [1, 'a'] | string }} {{ none | string }} {{ 'x' ~ none ~ false ~ 2.50 }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 7 | round }} {{ 2.567 | round(1, 'floor') }} {{ 2.512 | round(1, 'ceil') }} {{ -0.5 | round }}
{{ '  a  b  c  '.split(none, 1) }} {{ "they're 1st x-ray".title() }} {{ 'a,b,,c'.split(',', 2) }} {{ 'a b'.split(none, 0) }} {{ ''.split() }} {{ 'xyx'.lstrip('x') }}{{ 'xyx'.rstrip('x') }}
"""

# namespace, loop controls, filters and tests chat templates use; the {% generation %} tag of HF's AssistantTracker.
CONTROLS = r"""{%- set ns = namespace(count=0, last_user='') -%}
{%- for m in messages -%}
  {%- if m.role == 'system' -%}{%- continue -%}{%- endif -%}
  {%- set ns.count = ns.count + 1 -%}
  {%- if m.role == 'user' -%}{%- set ns.last_user = m.content -%}{%- endif -%}
  {{- loop.index }}/{{ loop.length }}:{{ m.role }}{{ ',' if not loop.last }}
  {%- if loop.index > 3 -%}{%- break -%}{%- endif -%}
{%- endfor %}
count={{ ns.count }} last_user_len={{ ns.last_user | length }}
users={{ messages | selectattr('role', 'equalto', 'user') | list | length }}
roles={{ messages | map(attribute='role') | join(',') }}
first={{ messages[0].role }} last={{ messages[-1]['role'] }} tail={{ messages[1:] | length }}
{% set d = dict(a=1, b='two') %}
{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}
{{ undefined_thing | default('dflt') }} {{ tools is none }} {{ documents is none }} {{ foo is defined }} {{ bos_token }}{{ eos_token }}
{% generation %}gen-body {{ messages | length }}{% endgeneration %}
{%- generation -%}
  trimmed-gen
{%- endgeneration %}

{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | join('|') }}
{% if messages | length > 4 %}{{ raise_exception('too many messages: ' ~ messages | length) }}{% endif %}
{% if 'role' in messages[0] %}has-role{% endif %} {{ messages[0].get('missing', 'got-default') }} {{ messages[0].keys() | list }}
{% if add_generation_prompt %}GEN{% endif %}
"""

SYNTAX_ERROR = "{% for message in messages %}{{ message.content }}"

SYNTHETIC = {
    "chatml_default": CHATML_DEFAULT,
    "llama2_style": LLAMA2_STYLE,
    "gemma_style": GEMMA_STYLE,
    "llama3_style": LLAMA3_STYLE,
    "whitespace": WHITESPACE,
    "pyjson": PYJSON,
    "pymethods": PYMETHODS,
    "controls": CONTROLS,
    "syntax_error": SYNTAX_ERROR,
}
SYNTHETIC_BOS, SYNTHETIC_EOS = "<s>", "</s>"

UNICODE_TEXT = (
    "  naïve café — 日本語 🎉 \"double\" 'single' back\\slash\n\nsecond paragraph\twith tab "
    "<|im_end|> literal  "
)

CONVERSATIONS = {
    "single_user": [{"role": "user", "content": "Hello!"}],
    "system_user": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "multi_turn": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "no_system": [
        {"role": "user", "content": "Write hello world in Rust."},
        {"role": "assistant", "content": "fn main() { println!(\"Hello, world!\"); }"},
        {"role": "user", "content": "Now in C."},
    ],
    "unicode": [
        {"role": "user", "content": UNICODE_TEXT},
        {"role": "assistant", "content": "Ça va?\r\n  « oui » ✓  "},
        {"role": "user", "content": "a\u0001b\u007fc\u00a0d\u2028e"},
    ],
    "roles_not_alternating": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ],
    "long": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "3"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "5"},
    ],
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather in a city, in \u00b0C or \u00b0F.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
                },
                "required": ["city"],
            },
        },
    }
]

# Extra keyword arguments some renders pass (apply_chat_template's **kwargs / tools=).
EXTRAS = {
    "qwen2.5-coder": [{}, {"tools": TOOLS}],
    "llama3_style": [{}, {"date_string": "01 Jan 2030"}],
    "controls": [{}, {"foo": [1, "x"]}],
}


def read_model_template(path: Path) -> str | None:
    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("tokenizer.chat_template")
    return None if field is None else field.contents()


def utc_naive(unix_secs: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(unix_secs, datetime.timezone.utc).replace(tzinfo=None)


def error_record(exc: Exception) -> dict:
    return {"error": str(exc), "error_type": type(exc).__name__}


def main() -> None:
    for f in list(MODEL_FILES.values()) + [NO_TEMPLATE_FILE]:
        if not (ASSETS / f).is_file():
            sys.exit(f"missing {ASSETS / f}: run scripts/fetch-assets.sh first")
    (OUT / "templates").mkdir(parents=True, exist_ok=True)

    templates = {}  # name -> (source, bos, eos, renderer)
    for name, file in MODEL_FILES.items():
        source = read_model_template(ASSETS / file)
        tok = AutoTokenizer.from_pretrained(str(ASSETS), gguf_file=file)
        assert tok.chat_template == source, f"{file}: tokenizer template differs from the GGUF key"

        def render(messages, agp, extra, tok=tok):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp, **extra)

        templates[name] = (source, tok.bos_token, tok.eos_token, render)
    if read_model_template(ASSETS / NO_TEMPLATE_FILE) is not None:
        sys.exit(f"{NO_TEMPLATE_FILE} unexpectedly has a chat template")

    for name, source in SYNTHETIC.items():

        def render(messages, agp, extra, source=source):
            rendered, _ = render_jinja_template(
                conversations=[messages],
                chat_template=source,
                add_generation_prompt=agp,
                bos_token=SYNTHETIC_BOS,
                eos_token=SYNTHETIC_EOS,
                **extra,
            )
            return rendered[0]

        templates[name] = (source, SYNTHETIC_BOS, SYNTHETIC_EOS, render)

    renders = []
    for name, (source, bos, eos, render) in templates.items():
        (OUT / "templates" / f"{name}.jinja").write_bytes(source.encode("utf-8"))
        for extra in EXTRAS.get(name, [{}]):
            for conv_name, messages in CONVERSATIONS.items():
                for agp in (False, True):
                    rec = {
                        "template": name,
                        "conversation": conv_name,
                        "add_generation_prompt": agp,
                        "extra": extra,
                    }
                    try:
                        rec["expected"] = render([dict(m) for m in messages], agp, extra)
                    except (jinja2.exceptions.TemplateError, TypeError, ValueError) as exc:
                        rec.update(error_record(exc))
                    renders.append(rec)

    golden = {
        "generator": "scripts/make_chat_goldens.py",
        "versions": {
            "transformers": transformers.__version__,
            "jinja2": jinja2.__version__,
            "python": sys.version.split()[0],
        },
        "templates": {name: {"bos_token": bos, "eos_token": eos} for name, (_, bos, eos, _) in templates.items()},
        "no_template_model": NO_TEMPLATE_FILE,
        "conversations": CONVERSATIONS,
        "renders": renders,
    }
    (OUT / "renders.json").write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    rng = random.Random(20240611)
    formats = [
        "%d %b %Y",
        "%Y-%m-%d %H:%M:%S",
        "%A, %B %d, %Y",
        "%a %b %e %I:%M:%S %p %y",
        "%j %u %w %% %D %F %T %R %h",
        "%c | %x | %X",
        "%Y%m%dT%H%M%S[%z][%Z]",
        "%U %W %V %G %g %C %k %l %P %r",
        "%-d %-m %-H %-j %_d %_m %0e %Ey %Od %Q %",
        "no directives at all",
    ]
    times = [0, 951782400, 1709164800, 4102444799] + [rng.randrange(0, 4102444800) for _ in range(40)]
    strf = [{"format": f, "unix_secs": t, "expected": utc_naive(t).strftime(f)} for f in formats for t in times]
    strf_golden = {
        "generator": "scripts/make_chat_goldens.py",
        "versions": {"python": sys.version.split()[0]},
        "cases": strf,
    }
    (OUT / "strftime.json").write_text(json.dumps(strf_golden, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(renders)} renders and {len(strf)} strftime cases to {OUT}")


if __name__ == "__main__":
    main()
