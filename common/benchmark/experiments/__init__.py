"""One-question experiments: each answered one design question once, and its answer is written in the docs (see
``README.md`` in this folder). They are kept runnable, so that the answer can be checked again, but they are not
part of the product: no console scripts, and nothing in the bundles or the user commands imports them."""
