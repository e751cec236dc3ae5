"""The original challenge's acceptance check: run against a live gateway
(``$DISTRIBUTE_SERVER``, default grpc://127.0.0.1:8000); prints "success"."""

import time

from distribute_challenge import compute_this


@compute_this(depmodules=[time])
def func(x):
    time.sleep(x)
    return x * x


out = func(2).run()
assert out == 4
print("success")
