"""Dashboards, provisioning and alert rules for the QoE exporter; see grafana/README.md."""
