"""Hostile markdown/HTML for every place the rating page shows untrusted text (answers, prompts, guidelines, …).

Each entry tries a different way to run script, load something from elsewhere, or clobber a page global.
"""

XSS_CORPUS: list[str] = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=http://evil.test/x.js></SCRIPT>",
    '<img src=x onerror="alert(1)">',
    "<img src=x onerror=alert(1)//",
    '<svg onload="alert(1)"><circle r="5"/></svg>',
    "<svg><script>alert(1)</script></svg>",
    '<a href="javascript:alert(1)">click</a>',
    "[x](javascript:alert(1))",
    "[y](JaVaScRiPt:alert(1))",
    "[z](&#106;avascript:alert(1))",
    "[w](java&#x09;script:alert(1))",
    "[v](  javascript:alert(1) )",
    '[t](http://evil.test/ "title" onmouseover=alert(1))',
    "[u](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[d](vbscript:msgbox(1))",
    '<iframe src="http://evil.test/"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '<div style="background:url(javascript:alert(1))">styled</div>',
    '<p style="width: expression(alert(1))">expression</p>',
    "<style>body{background:url(http://evil.test/x.png)}</style>",
    '<object data="data:text/html,<script>alert(1)</script>"></object>',
    '<embed src="http://evil.test/x.swf">',
    '<form action="http://evil.test/"><button>go</button></form>',
    '<meta http-equiv="refresh" content="0;url=http://evil.test/">',
    '<base href="http://evil.test/">',
    '<link rel="stylesheet" href="http://evil.test/x.css">',
    '<a id="htmx" name="htmx">clobber</a>',
    '<form id="pair"><input name="innerHTML"></form>',
    "![](http://evil.test/x.png)",
    '![alt](http://evil.test/y.png "t")',
    "![data](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;img src=x onerror=alert(1)&#62;",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<details open ontoggle=alert(1)>x</details>",
    '<video><source onerror="alert(1)"></video>',
    '<body onload="alert(1)">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "`<script>alert(1)</script>` and\n\n```html\n<img src=x onerror=alert(1)>\n```",
    '<a href="http://evil.test/" target="_blank">off site</a>',
]

# Markdown that must still read well after sanitizing.
RICH_MARKDOWN = """Steps:

1. First *step*
2. Second **step**

- bullet one
- bullet two

```python
def keep(x):
    return x < 3 and x > 1
```

| Tool | Use |
| --- | :---: |
| brush | dust |
"""
