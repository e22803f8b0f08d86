"""The Hiphops Kubernetes operator (kopf), imported as `hiphops_operator`.

Sensors are compiled into the matcher, Integrations checked, events taken in at the intake and
recorded as SensorRuns, runs executed (in-process handlers and `k8s.run_job` Jobs). Start it with
`hiphops_operator.main.run(settings)` or `kopf run -m hiphops_operator.handlers`.
"""
