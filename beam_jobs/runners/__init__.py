"""Where Beam jobs run beyond the DirectRunner: set-up of runners we start ourselves (Flink)."""
