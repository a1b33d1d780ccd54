"""Service orders (派单): bookings of everyday help (meals, mobility, cleaning …) routed to
an outside provider (服务商) or a station, with their own lifecycle, service levels and
audit rows. Orders never enter the emergency call queue: they live in their own table."""
