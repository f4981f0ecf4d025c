"""Provider adapters: one module per provider behind one interface (`base.ProviderAdapter`)."""
