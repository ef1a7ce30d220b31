# The router's image: build it beside the project's wheel, e.g.
#   pip wheel --no-deps -w k8s/ /path/to/cascadia-plan && docker build -t cascadia-plan-router:0.1.0 -f k8s/router.Dockerfile k8s/
FROM python:3.11-slim
COPY cascadia_plan-0.1.0-py3-none-any.whl /tmp/
RUN pip install --no-cache-dir '/tmp/cascadia_plan-0.1.0-py3-none-any.whl[router]' && rm /tmp/*.whl
USER 65534
EXPOSE 8080
