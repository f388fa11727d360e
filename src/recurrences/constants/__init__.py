"""Formulas for mathematical constants: harvest -> read -> validate -> canonical PCF -> dynamics -> report. Imports no torch."""
