"""Cảnh Báo: the dispatcher provinces use to warn people about scams by SMS and Zalo."""
